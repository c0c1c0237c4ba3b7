//! Reading requests the contract's way: the bearer token, one percent-decoded key segment,
//! query parameters (unknown ones refused), conditional headers, and bodies whose size and
//! media type are checked before they are read in full.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use percent_encoding::percent_decode_str;
use tresor_core::CoreError;
use tresor_core::model::RecordKey;
use tresor_core::service::Condition;

/// Decodes one raw (still percent-encoded) path segment exactly once into a validated key.
pub fn decode_key(raw: &str) -> Result<RecordKey, CoreError> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| CoreError::invalid("the key is not valid UTF-8 once percent-decoded"))?;
    RecordKey::parse(&decoded)
}

/// Query parameters, each allowed at most once; anything not in `allowed` is a 400.
/// The error for a name the request may not use (a member of a JSON body, a query parameter, a
/// store or an op). The name itself is never repeated: whatever a caller put there (a value
/// pasted into the wrong place, say) must not come back in an error body or reach a log, so the
/// message lists what is accepted instead.
pub fn unknown(what: &str, allowed: &[&str]) -> CoreError {
    let list: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
    if list.is_empty() {
        CoreError::invalid(format!("unknown {what}"))
    } else {
        CoreError::invalid(format!("unknown {what} (accepted: {})", list.join(", ")))
    }
}

pub fn parse_query(
    query: Option<&str>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, CoreError> {
    let mut out = BTreeMap::new();
    let Some(q) = query else { return Ok(out) };
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode_component(k)?;
        let v = decode_component(v)?;
        if !allowed.contains(&k.as_str()) {
            return Err(unknown("query parameter", allowed));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(CoreError::invalid(format!(
                "the query parameter `{k}` is given more than once"
            )));
        }
    }
    Ok(out)
}

fn decode_component(s: &str) -> Result<String, CoreError> {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| CoreError::invalid("a query parameter is not valid UTF-8"))
}

/// `fields=a,b` as a list.
pub fn fields_param(q: &BTreeMap<String, String>) -> Result<Option<Vec<String>>, CoreError> {
    match q.get("fields") {
        None => Ok(None),
        Some(f) => {
            let list: Vec<String> = f.split(',').map(str::to_owned).collect();
            if list.iter().any(String::is_empty) {
                return Err(CoreError::invalid(
                    "fields must be a comma-separated list of names",
                ));
            }
            Ok(Some(list))
        }
    }
}

/// `return=previous`.
pub fn return_previous(q: &BTreeMap<String, String>) -> Result<bool, CoreError> {
    match q.get("return").map(String::as_str) {
        None => Ok(false),
        Some("previous") => Ok(true),
        Some(_) => Err(CoreError::invalid("`return` accepts only `previous`")),
    }
}

/// An integer query parameter.
pub fn int_param(q: &BTreeMap<String, String>, name: &str) -> Result<Option<i64>, CoreError> {
    q.get(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| CoreError::invalid(format!("`{name}` must be an integer")))
        })
        .transpose()
}

/// `If-Match` / `If-None-Match` as a condition.
pub fn condition(headers: &HeaderMap) -> Result<Condition, CoreError> {
    let if_match = header_str(headers, header::IF_MATCH.as_str())?;
    let if_none = header_str(headers, header::IF_NONE_MATCH.as_str())?;
    match (if_match, if_none) {
        (Some(_), Some(_)) => Err(CoreError::invalid(
            "send either If-Match or If-None-Match, not both",
        )),
        (Some(m), None) => {
            let m = m.trim();
            if m == "*" {
                return Ok(Condition::IfMatchAny);
            }
            let v = m
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|v| *v > 0)
                .ok_or_else(|| {
                    CoreError::invalid("If-Match takes `*` or one strong ETag such as \"7\"")
                })?;
            Ok(Condition::IfMatch(v))
        }
        (None, Some(n)) => {
            if n.trim() == "*" {
                Ok(Condition::IfNoneMatch)
            } else {
                Err(CoreError::invalid("If-None-Match takes only `*`"))
            }
        }
        (None, None) => Ok(Condition::None),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, CoreError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| CoreError::invalid(format!("the {name} header is not ASCII")))
        })
        .transpose()
}

/// Which media types a body may have.
#[derive(Debug, Clone, Copy)]
pub enum Media {
    Json,
    MergePatch,
}

/// Checks the media type and size, then reads the body (at most `limit` bytes).
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    media: Media,
    limit: usize,
) -> Result<bytes::Bytes, CoreError> {
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str())?;
    let length = header_str(headers, header::CONTENT_LENGTH.as_str())?
        .and_then(|l| l.trim().parse::<u64>().ok());
    if let Some(n) = length
        && n > limit as u64
    {
        return Err(too_large(limit));
    }
    let essence = content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    // A body without a media type is fine only when it is empty.
    if essence.is_none() {
        let bytes = read_limited(body, limit).await?;
        if bytes.is_empty() {
            return Ok(bytes);
        }
        return Err(wrong_media(media));
    }
    let ok = match (media, essence.as_deref()) {
        (_, None) => false,
        (Media::Json, Some(t)) => t == "application/json",
        (Media::MergePatch, Some(t)) => {
            t == "application/merge-patch+json" || t == "application/json"
        }
    };
    if !ok {
        return Err(wrong_media(media));
    }
    read_limited(body, limit).await
}

fn wrong_media(media: Media) -> CoreError {
    let want = match media {
        Media::Json => "application/json",
        Media::MergePatch => "application/merge-patch+json",
    };
    CoreError::UnsupportedMediaType(format!("the body must be sent as {want}"))
}

async fn read_limited(body: Body, limit: usize) -> Result<bytes::Bytes, CoreError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))
}

fn too_large(limit: usize) -> CoreError {
    CoreError::PayloadTooLarge(format!("the request body is over {limit} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_exactly_once() {
        assert_eq!(decode_key("a%2Fb").unwrap().as_str(), "a/b");
        assert_eq!(decode_key("a%252F").unwrap().as_str(), "a%2F");
        assert_eq!(decode_key("%C3%A9").unwrap().as_str(), "é");
        assert!(decode_key("%FF").is_err());
        assert!(decode_key("%2E%2E").is_err());
        assert!(decode_key("a%00").is_err());
    }

    #[test]
    fn query_rules() {
        let q = parse_query(Some("prefix=a%2Fb&limit=5"), &["prefix", "limit"]).unwrap();
        assert_eq!(q["prefix"], "a/b");
        assert!(parse_query(Some("bogus=1"), &["prefix"]).is_err());
        assert!(parse_query(Some("limit=1&limit=2"), &["limit"]).is_err());
        assert!(parse_query(None, &[]).unwrap().is_empty());
    }

    #[test]
    fn conditions() {
        let mut h = HeaderMap::new();
        assert_eq!(condition(&h).unwrap(), Condition::None);
        h.insert(header::IF_MATCH, "\"7\"".parse().unwrap());
        assert_eq!(condition(&h).unwrap(), Condition::IfMatch(7));
        h.insert(header::IF_MATCH, "*".parse().unwrap());
        assert_eq!(condition(&h).unwrap(), Condition::IfMatchAny);
        h.insert(header::IF_MATCH, "W/\"7\"".parse().unwrap());
        assert!(condition(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, "*".parse().unwrap());
        assert_eq!(condition(&h).unwrap(), Condition::IfNoneMatch);
    }
}
