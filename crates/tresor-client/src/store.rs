//! [`StoreClient`]: the calls of one record store (`secrets`, `settings`, `kv`, `shared`),
//! including the OCP-style read-compute-write [`StoreClient::update`] and paged listing.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::{Answer, Client, Request};
use crate::encode::{Query, path_segment};
use crate::error::{Error, Result};
use crate::ops::FieldOp;
use crate::types::{
    DeleteAnswer, DeleteOptions, ListAnswer, OpsOptions, OpsOutcome, PatchOptions, PatchOutcome,
    PutOptions, PutOutcome, Record, RecordMeta, Store, WriteAnswer,
};

/// How often [`StoreClient::update`] tries before giving up on a contended key.
pub const UPDATE_ATTEMPTS: u32 = 100;

/// One record store, as seen by the client's token.
#[derive(Debug, Clone)]
pub struct StoreClient {
    client: Client,
    store: Store,
}

impl StoreClient {
    pub(crate) fn new(client: Client, store: Store) -> StoreClient {
        StoreClient { client, store }
    }

    /// Which store this is.
    pub fn store(&self) -> Store {
        self.store
    }

    /// Reads a record; `None` when the key does not exist (or expired).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Record<T>>> {
        self.get_query(key, Query::default()).await
    }

    /// Reads only these top-level fields of an object value (missing fields are left out;
    /// a non-object value is 409 `conflict`).
    pub async fn get_fields<T: DeserializeOwned, S: AsRef<str>>(
        &self,
        key: &str,
        fields: &[S],
    ) -> Result<Option<Record<T>>> {
        let mut query = Query::default();
        query.push_fields(fields)?;
        self.get_query(key, query).await
    }

    /// Creates or replaces a record (last write wins); removes any earlier expiry.
    pub async fn put<V: Serialize + ?Sized>(&self, key: &str, value: &V) -> Result<PutOutcome> {
        self.put_with(key, value, PutOptions::default()).await
    }

    /// Creates or replaces a record with a description, a TTL, a condition, or asking for the
    /// previous record.
    pub async fn put_with<V: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &V,
        options: PutOptions,
    ) -> Result<PutOutcome> {
        #[derive(Serialize)]
        struct Body<'a, V: ?Sized> {
            value: &'a V,
            #[serde(skip_serializing_if = "Option::is_none")]
            description: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            ttl_seconds: Option<u64>,
        }
        let mut query = Query::default();
        if options.return_previous {
            query.push("return", "previous");
        }
        let mut request = self
            .record_request(Method::PUT, key, "", &query)?
            .if_match(options.if_match)?;
        if options.if_none_match {
            request = request.header("if-none-match", "*".to_owned())?;
        }
        let request = request.json_body(&Body {
            value,
            description: options.description.as_deref(),
            ttl_seconds: options.ttl_seconds,
        })?;
        let answer = self.client.call(request).await?;
        let created = answer.status == StatusCode::CREATED;
        let (meta, _, previous) = answer.json::<WriteAnswer>("PUT answer")?.split();
        Ok(PutOutcome {
            meta,
            created,
            previous,
        })
    }

    /// Applies a JSON Merge Patch (RFC 7396) atomically; a missing key is patched from `{}`.
    /// Two concurrent patches of different fields both survive.
    pub async fn patch<P: Serialize + ?Sized>(&self, key: &str, patch: &P) -> Result<PatchOutcome> {
        self.patch_with(key, patch, PatchOptions::default()).await
    }

    /// [`StoreClient::patch`] with a condition, a new TTL, or asking for the previous record.
    pub async fn patch_with<P: Serialize + ?Sized>(
        &self,
        key: &str,
        patch: &P,
        options: PatchOptions,
    ) -> Result<PatchOutcome> {
        let mut query = Query::default();
        query.push_opt("ttl_seconds", options.ttl_seconds);
        if options.return_previous {
            query.push("return", "previous");
        }
        let request = self
            .record_request(Method::PATCH, key, "", &query)?
            .if_match(options.if_match)?
            .body_with_type(patch, "application/merge-patch+json")?;
        let answer = self.client.call(request).await?;
        let (meta, value, previous) = answer.json::<WriteAnswer>("PATCH answer")?.split();
        Ok(PatchOutcome {
            meta,
            value,
            previous,
        })
    }

    /// Replaces the value by `f(current)`: reads the record, computes, and writes back only if
    /// nobody wrote in between (`If-Match`, or `If-None-Match: *` when the key is missing),
    /// retrying on `412` up to [`UPDATE_ATTEMPTS`] times with a short jittered pause.
    ///
    /// `f` may therefore run more than once and must not have side effects beyond computing the
    /// new value. The description and the remaining lifetime of the record are kept (the TTL is
    /// recomputed from `expires_at` and this machine's clock). For changes of some fields,
    /// [`StoreClient::patch`] is cheaper and never retries. Needs both the read and write scope.
    /// When every attempt lost, the last `precondition_failed` error is returned.
    pub async fn update<T, F>(&self, key: &str, mut f: F) -> Result<Record<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (old, options) = match self.get::<T>(key).await? {
                Some(record) => {
                    let ttl_seconds = match &record.meta.expires_at {
                        Some(expires_at) => Some(remaining_ttl(expires_at, SystemTime::now())?),
                        None => None,
                    };
                    let options = PutOptions {
                        description: record.meta.description,
                        ttl_seconds,
                        if_match: Some(record.meta.version),
                        ..PutOptions::default()
                    };
                    (Some(record.value), options)
                }
                None => {
                    let options = PutOptions {
                        if_none_match: true,
                        ..PutOptions::default()
                    };
                    (None, options)
                }
            };
            let new = f(old);
            match self.put_with(key, &new, options).await {
                Ok(outcome) => {
                    return Ok(Record {
                        meta: outcome.meta,
                        value: new,
                    });
                }
                Err(err) if err.is_precondition_failed() && attempt < UPDATE_ATTEMPTS => {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// `true` when the key exists (HEAD).
    pub async fn exists(&self, key: &str) -> Result<bool> {
        let request = self.record_request(Method::HEAD, key, "", &Query::default())?;
        let answer = self.client.send(request).await?;
        if answer.status.is_success() {
            Ok(true)
        } else if answer.is_not_found() {
            Ok(false)
        } else {
            Err(answer.into_error())
        }
    }

    /// Deletes a record; succeeds whether or not it exists.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.delete_with(key, DeleteOptions::default())
            .await
            .map(|_| ())
    }

    /// Deletes a record or some of its fields, conditionally, or returning the previous record
    /// (`None` when not asked for, or when there was none).
    pub async fn delete_with(
        &self,
        key: &str,
        options: DeleteOptions,
    ) -> Result<Option<Record<Value>>> {
        let mut query = Query::default();
        query.push_fields(&options.fields)?;
        if options.return_previous {
            query.push("return", "previous");
        }
        let request = self
            .record_request(Method::DELETE, key, "", &query)?
            .if_match(options.if_match)?;
        let answer = self.client.call(request).await?;
        if answer.status == StatusCode::NO_CONTENT || answer.body.is_empty() {
            return Ok(None);
        }
        Ok(answer.json::<DeleteAnswer>("DELETE answer")?.previous)
    }

    /// Lists the metadata of the records whose key starts with `prefix` ("" for all), in key
    /// order, `page_size` (1..=1000, server default 100) at a time.
    pub fn list(&self, prefix: &str, page_size: Option<u32>) -> Pages {
        Pages {
            store: self.clone(),
            prefix: prefix.to_owned(),
            page_size,
            cursor: None,
            done: false,
        }
    }

    /// Every record's metadata under `prefix`, following all pages.
    pub async fn list_all(&self, prefix: &str) -> Result<Vec<RecordMeta>> {
        self.list(prefix, Some(1000)).collect_all().await
    }

    /// Applies 1–100 field ops atomically to the object at `key` (a missing key starts as
    /// `{}`). If any op does not fit, nothing changes and the answer is 409 `conflict`.
    pub async fn ops(&self, key: &str, ops: Vec<FieldOp>) -> Result<OpsOutcome> {
        self.ops_with(key, ops, OpsOptions::default()).await
    }

    /// [`StoreClient::ops`] with a condition or a new TTL.
    pub async fn ops_with(
        &self,
        key: &str,
        ops: Vec<FieldOp>,
        options: OpsOptions,
    ) -> Result<OpsOutcome> {
        #[derive(Serialize)]
        struct Body {
            ops: Vec<FieldOp>,
            #[serde(skip_serializing_if = "Option::is_none")]
            ttl_seconds: Option<u64>,
        }
        let request = self
            .record_request(Method::POST, key, "/ops", &Query::default())?
            .if_match(options.if_match)?
            .json_body(&Body {
                ops,
                ttl_seconds: options.ttl_seconds,
            })?;
        self.client.call(request).await?.json("ops answer")
    }

    async fn get_query<T: DeserializeOwned>(
        &self,
        key: &str,
        query: Query,
    ) -> Result<Option<Record<T>>> {
        let request = self.record_request(Method::GET, key, "", &query)?;
        let answer: Answer = self.client.send(request).await?;
        if answer.status.is_success() {
            answer.json("record").map(Some)
        } else {
            let err = answer.into_error();
            if err.is_not_found() {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }

    fn record_request(
        &self,
        method: Method,
        key: &str,
        suffix: &str,
        query: &Query,
    ) -> Result<Request> {
        let path = format!(
            "/v1/{}/{}{suffix}",
            self.store.as_str(),
            path_segment("key", key)?
        );
        self.client.request(method, &path, query.as_str())
    }

    async fn list_page(
        &self,
        prefix: &str,
        page_size: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<ListAnswer<RecordMeta>> {
        let mut query = Query::default();
        if !prefix.is_empty() {
            query.push("prefix", prefix);
        }
        query
            .push_opt("limit", page_size)
            .push_opt("cursor", cursor);
        let path = format!("/v1/{}", self.store.as_str());
        let request = self.client.request(Method::GET, &path, query.as_str())?;
        self.client.call(request).await?.json("list answer")
    }
}

/// The pages of a listing; call [`Pages::next_page`] until it returns `None`.
#[derive(Debug)]
pub struct Pages {
    store: StoreClient,
    prefix: String,
    page_size: Option<u32>,
    cursor: Option<String>,
    done: bool,
}

impl Pages {
    /// The next page, `None` once the listing is complete. A page may be shorter than the page
    /// size, even empty, without being the last. After an error the same page can be asked for
    /// again.
    pub async fn next_page(&mut self) -> Result<Option<Vec<RecordMeta>>> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .store
            .list_page(&self.prefix, self.page_size, self.cursor.as_deref())
            .await?;
        self.done = page.next_cursor.is_none();
        self.cursor = page.next_cursor;
        Ok(Some(page.items))
    }

    /// The cursor of the next page, to resume a listing later.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Every remaining item.
    pub async fn collect_all(mut self) -> Result<Vec<RecordMeta>> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }
}

/// The largest `ttl_seconds` the contract accepts.
const MAX_TTL_SECONDS: u64 = 3_153_600_000;

/// A short exponential pause with full jitter, so that contending updaters spread out.
fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = (5u64 << attempt.min(5)).min(100);
    let random = RandomState::new().build_hasher().finish();
    Duration::from_millis(1 + random % ceiling_ms)
}

/// The TTL that keeps a record's `expires_at`, measured from `now`; at least 1 second.
fn remaining_ttl(expires_at: &str, now: SystemTime) -> Result<u64> {
    let expires_ms = parse_rfc3339_utc_ms(expires_at).ok_or_else(|| {
        Error::Decode(format!("unrecognised expires_at timestamp {expires_at:?}"))
    })?;
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| i128::try_from(d.as_millis()).unwrap_or(i128::MAX))
        .unwrap_or(0);
    let left_ms = i128::from(expires_ms) - now_ms;
    let seconds = (left_ms + 999)
        .div_euclid(1000)
        .clamp(1, i128::from(MAX_TTL_SECONDS));
    Ok(u64::try_from(seconds).unwrap_or(MAX_TTL_SECONDS))
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)`, the contract's
/// timestamp format.
fn parse_rfc3339_utc_ms(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once(['T', 't'])?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: i64 = date_parts.next()?.parse().ok()?;
    let day: i64 = date_parts.next()?.parse().ok()?;
    if date_parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, fraction),
        None => (time, ""),
    };
    let mut clock_parts = clock.split(':');
    let hour: i64 = clock_parts.next()?.parse().ok()?;
    let minute: i64 = clock_parts.next()?.parse().ok()?;
    let second: i64 = clock_parts.next()?.parse().ok()?;
    if clock_parts.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0i64, |acc, digit| acc * 10 + i64::from(digit - b'0'));
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_contract_timestamps() {
        assert_eq!(parse_rfc3339_utc_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_rfc3339_utc_ms("2026-11-22T05:03:14.123Z"),
            Some(1_795_323_794_123)
        );
        assert_eq!(
            parse_rfc3339_utc_ms("2000-02-29T12:00:00Z"),
            Some(951_825_600_000)
        );
        assert_eq!(
            parse_rfc3339_utc_ms("2000-02-29T12:00:00.5+00:00"),
            Some(951_825_600_500)
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T05:03:14.123",
            "2026-13-22T05:03:14Z",
            "2026-11-22T05:03:1x.123Z",
            "2026-11-22T05:03:14.1a3Z",
        ] {
            assert_eq!(parse_rfc3339_utc_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn remaining_ttl_rounds_up_and_stays_positive() {
        let now = UNIX_EPOCH + Duration::from_millis(1_000_000);
        assert_eq!(remaining_ttl("1970-01-01T00:16:50.001Z", now).unwrap(), 11);
        assert_eq!(remaining_ttl("1970-01-01T00:16:40.000Z", now).unwrap(), 1);
        assert_eq!(remaining_ttl("1970-01-01T00:00:00.000Z", now).unwrap(), 1);
        assert!(matches!(
            remaining_ttl("tomorrow", now),
            Err(Error::Decode(_))
        ));
    }

    #[test]
    fn backoff_is_short_and_bounded() {
        for attempt in 1..200 {
            let pause = backoff(attempt);
            assert!(pause >= Duration::from_millis(1));
            assert!(pause <= Duration::from_millis(100));
        }
    }
}
