//! `tresor secrets|settings|kv|shared …`: the record stores from the command line, with an
//! installation token.

use std::io::Read;

use serde_json::Value;
use tresor_client::{
    DeleteOptions, FieldOp, OpsOptions, PatchOptions, PutOptions, Record, Store, StoreClient,
};

use crate::cli_common::{
    CliError, CliResult, ConnArgs, EXIT_NOT_FOUND, EXIT_OK, Failure, TokenKind, connect, fail,
    page_size, parse_json, parse_value, print_json, print_json_line, print_line, print_raw,
    split_list, to_json,
};

/// Flags and subcommand of one store.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The installation token comes from --token-file PATH or TRESOR_TOKEN; \
    there is deliberately no --token flag (command lines leak into shell history).\n\
    Exit codes: 0 success, 1 not found / false, 2 usage, 3 API error, 4 transport or \
    configuration error."
)]
pub struct StoreArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Print a value: a string as it is, anything else as pretty JSON. A missing key prints
    /// nothing and exits 1.
    #[command(
        long_about = "Print a value: a string value as it is (followed by a newline only on a \
            terminal, so `> file` stores it exactly), anything else as pretty JSON. With --json, \
            print the whole record (metadata and value). A missing key prints nothing and exits 1."
    )]
    Get(GetArgs),
    /// Create or replace a record. VALUE `-` reads stdin, which keeps secrets off the command
    /// line.
    #[command(
        long_about = "Create or replace a record. VALUE is JSON (`'{\"token\": \"t\"}'`, `42`, \
            `'\"text\"'`) unless --string is given, which stores it as a JSON string. VALUE `-` \
            reads the value from stdin, so that a secret never appears on the command line or in \
            shell history: `tresor secrets put api-key - --string < key.txt` (from stdin a \
            --string value loses one trailing newline)."
    )]
    Put(PutArgs),
    /// Apply a JSON Merge Patch (RFC 7396) atomically; PATCH_JSON `-` reads stdin.
    Patch(PatchArgs),
    /// Delete a record, or only some of its fields; succeeds whether or not it exists.
    Rm(RmArgs),
    /// List keys, one per line (with --json: metadata, one JSON document per line).
    Ls(LsArgs),
    /// Exit 0 if the key exists, 1 if not; prints nothing.
    Exists(KeyArg),
    /// Apply atomic field operations: OPS_JSON is the array of ops, `-` reads stdin. Prints the
    /// results array.
    #[command(
        long_about = "Apply atomic field operations to the object at KEY. OPS_JSON is the array \
            of ops, for example '[{\"op\": \"increment\", \"field\": \"count\", \"by\": 1}, \
            {\"op\": \"list_push\", \"field\": \"queue\", \"values\": [\"job\"]}]'; `-` reads it \
            from stdin. Prints the results array (with --json: the record metadata too)."
    )]
    Ops(OpsArgs),
}

#[derive(Debug, clap::Args)]
pub struct KeyArg {
    /// The record's key (1–500 bytes of UTF-8).
    pub key: String,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The record's key (1–500 bytes of UTF-8).
    pub key: String,
    /// Only these top-level fields of an object value (comma-separated or repeated).
    #[arg(long, value_name = "A,B")]
    pub fields: Vec<String>,
    /// Print the whole record (metadata and value) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    /// The record's key (1–500 bytes of UTF-8).
    pub key: String,
    /// JSON, or text with --string; `-` reads stdin.
    #[arg(allow_hyphen_values = true)]
    pub value: String,
    /// Store VALUE as a JSON string instead of parsing it as JSON.
    #[arg(long)]
    pub string: bool,
    /// A description of the record (replaces any earlier one).
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Expire the record after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    /// Write only if the current version is N.
    #[arg(long, value_name = "N", conflicts_with = "if_absent")]
    pub if_match: Option<u64>,
    /// Write only if the key does not exist.
    #[arg(long)]
    pub if_absent: bool,
    /// Print the new record's metadata as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PatchArgs {
    /// The record's key (1–500 bytes of UTF-8).
    pub key: String,
    /// The merge patch as JSON; `-` reads stdin.
    #[arg(allow_hyphen_values = true)]
    pub patch_json: String,
    /// Patch only if the current version is N.
    #[arg(long, value_name = "N")]
    pub if_match: Option<u64>,
    /// Set a new expiry (without it the current one is kept).
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    /// Print the patched record as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The record's key (1–500 bytes of UTF-8).
    pub key: String,
    /// Remove only these top-level fields (comma-separated or repeated).
    #[arg(long, value_name = "A,B")]
    pub fields: Vec<String>,
    /// Delete only if the current version is N.
    #[arg(long, value_name = "N")]
    pub if_match: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only keys starting with this prefix.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Print at most N keys.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Print each record's metadata as one JSON document per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct OpsArgs {
    /// The record's key (1–500 bytes of UTF-8).
    pub key: String,
    /// The JSON array of field ops; `-` reads stdin.
    #[arg(allow_hyphen_values = true)]
    pub ops_json: String,
    /// Apply only if the current version is N.
    #[arg(long, value_name = "N")]
    pub if_match: Option<u64>,
    /// Set a new expiry (without it the current one is kept).
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    /// Print the record metadata and the results as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Runs a store subcommand.
pub async fn run(store: Store, args: StoreArgs) -> CliResult {
    let session = connect(&args.conn, TokenKind::Installation)?;
    let client = session.client.store(store);
    let stdin = &mut std::io::stdin();
    let result = match args.command {
        StoreCommand::Get(args) => get(&client, args).await,
        StoreCommand::Put(args) => put(&client, args, stdin).await,
        StoreCommand::Patch(args) => patch(&client, args, stdin).await,
        StoreCommand::Rm(args) => rm(&client, args).await,
        StoreCommand::Ls(args) => ls(&client, args).await,
        StoreCommand::Exists(args) => exists(&client, args).await,
        StoreCommand::Ops(args) => ops(&client, args, stdin).await,
    };
    result.map_err(|e| fail(&session, e))
}

type Outcome = Result<u8, Failure>;

async fn get(client: &StoreClient, args: GetArgs) -> Outcome {
    let fields = split_list(&args.fields);
    let record: Option<Record<Value>> = if fields.is_empty() {
        client.get(&args.key).await?
    } else {
        client.get_fields(&args.key, &fields).await?
    };
    let Some(record) = record else {
        return Ok(EXIT_NOT_FOUND);
    };
    if args.json {
        print_json(&to_json(&record)?)?;
    } else if let Value::String(text) = &record.value {
        print_raw(text)?;
    } else {
        print_json(&record.value)?;
    }
    Ok(EXIT_OK)
}

/// The write options `put` flags ask for.
fn put_options(args: &PutArgs) -> PutOptions {
    PutOptions {
        description: args.description.clone(),
        ttl_seconds: args.ttl,
        if_match: args.if_match,
        if_none_match: args.if_absent,
        return_previous: false,
    }
}

async fn put(client: &StoreClient, args: PutArgs, stdin: &mut dyn Read) -> Outcome {
    let value = parse_value(&args.value, args.string, "VALUE", stdin)?;
    let outcome = client
        .put_with(&args.key, &*value, put_options(&args))
        .await?;
    if args.json {
        print_json(&to_json(&outcome.meta)?)?;
    }
    Ok(EXIT_OK)
}

fn patch_options(args: &PatchArgs) -> PatchOptions {
    PatchOptions {
        if_match: args.if_match,
        ttl_seconds: args.ttl,
        return_previous: false,
    }
}

async fn patch(client: &StoreClient, args: PatchArgs, stdin: &mut dyn Read) -> Outcome {
    // Kept as raw text: the server, not this client, judges the patch (and duplicate names).
    let patch = parse_value(&args.patch_json, false, "PATCH_JSON", stdin)?;
    let outcome = client
        .patch_with(&args.key, &*patch, patch_options(&args))
        .await?;
    if args.json {
        let document = match outcome.value {
            Some(value) => to_json(&Record {
                meta: outcome.meta,
                value,
            })?,
            None => to_json(&outcome.meta)?,
        };
        print_json(&document)?;
    }
    Ok(EXIT_OK)
}

fn delete_options(args: &RmArgs) -> DeleteOptions {
    DeleteOptions {
        if_match: args.if_match,
        fields: split_list(&args.fields),
        return_previous: false,
    }
}

async fn rm(client: &StoreClient, args: RmArgs) -> Outcome {
    client.delete_with(&args.key, delete_options(&args)).await?;
    Ok(EXIT_OK)
}

async fn ls(client: &StoreClient, args: LsArgs) -> Outcome {
    if args.limit == Some(0) {
        return Ok(EXIT_OK);
    }
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut pages = client.list(&args.prefix, Some(page_size(args.limit)));
    while let Some(page) = pages.next_page().await? {
        for meta in page {
            if args.json {
                print_json_line(&to_json(&meta)?)?;
            } else {
                print_line(&meta.key)?;
            }
            left -= 1;
            if left == 0 {
                return Ok(EXIT_OK);
            }
        }
    }
    Ok(EXIT_OK)
}

async fn exists(client: &StoreClient, args: KeyArg) -> Outcome {
    Ok(if client.exists(&args.key).await? {
        EXIT_OK
    } else {
        EXIT_NOT_FOUND
    })
}

/// The ops of an OPS_JSON argument: an array of op objects.
fn parse_ops(ops: Value) -> Result<Vec<FieldOp>, CliError> {
    let Value::Array(ops) = ops else {
        return Err(CliError::usage("OPS_JSON must be a JSON array of ops"));
    };
    ops.into_iter()
        .enumerate()
        .map(|(i, op)| {
            FieldOp::from_json(op).map_err(|_| {
                CliError::usage(format!(
                    "op {i} of OPS_JSON is not an object with a string \"op\""
                ))
            })
        })
        .collect()
}

async fn ops(client: &StoreClient, args: OpsArgs, stdin: &mut dyn Read) -> Outcome {
    let ops = parse_ops(parse_json(&args.ops_json, "OPS_JSON", stdin)?)?;
    let options = OpsOptions {
        if_match: args.if_match,
        ttl_seconds: args.ttl,
    };
    let outcome = client.ops_with(&args.key, ops, options).await?;
    if args.json {
        let record = match &outcome.record {
            Some(meta) => to_json(meta)?,
            None => Value::Null,
        };
        let mut document = serde_json::Map::new();
        document.insert("record".to_owned(), record);
        document.insert("results".to_owned(), Value::Array(outcome.results));
        print_json(&Value::Object(document))?;
    } else {
        print_json(&Value::Array(outcome.results))?;
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        args: StoreArgs,
    }

    fn parse(args: &[&str]) -> Result<StoreArgs, clap::Error> {
        let mut argv = vec!["secrets"];
        argv.extend_from_slice(args);
        Harness::try_parse_from(argv).map(|h| h.args)
    }

    #[test]
    fn put_flags_map_to_options() {
        let args = parse(&[
            "put",
            "k",
            "-",
            "--string",
            "--description",
            "d",
            "--ttl",
            "60",
            "--if-match",
            "7",
        ])
        .unwrap();
        let StoreCommand::Put(put) = args.command else {
            panic!("not put")
        };
        assert_eq!(put.value, "-");
        assert!(put.string);
        assert_eq!(
            put_options(&put),
            PutOptions {
                description: Some("d".into()),
                ttl_seconds: Some(60),
                if_match: Some(7),
                if_none_match: false,
                return_previous: false,
            }
        );
        let args = parse(&["put", "k", "1", "--if-absent"]).unwrap();
        let StoreCommand::Put(put) = args.command else {
            panic!("not put")
        };
        assert!(put_options(&put).if_none_match);
    }

    #[test]
    fn if_match_and_if_absent_conflict() {
        let err = parse(&["put", "k", "1", "--if-match", "3", "--if-absent"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn negative_numbers_are_values_not_flags() {
        let args = parse(&["put", "k", "-5"]).unwrap();
        let StoreCommand::Put(put) = args.command else {
            panic!("not put")
        };
        assert_eq!(put.value, "-5");
    }

    #[test]
    fn connection_flags_work_after_the_subcommand() {
        let args = parse(&[
            "get",
            "k",
            "--addr",
            "https://h.example",
            "--token-file",
            "/t",
        ])
        .unwrap();
        assert_eq!(args.conn.addr, "https://h.example");
        assert_eq!(
            args.conn.token_file.as_deref(),
            Some(std::path::Path::new("/t"))
        );
    }

    #[test]
    fn there_is_no_token_flag() {
        assert!(parse(&["get", "k", "--token", "t"]).is_err());
    }

    #[test]
    fn rm_and_patch_flags_map_to_options() {
        let args = parse(&[
            "rm",
            "k",
            "--fields",
            "a,b",
            "--fields",
            "c",
            "--if-match",
            "2",
        ])
        .unwrap();
        let StoreCommand::Rm(rm) = args.command else {
            panic!("not rm")
        };
        assert_eq!(
            delete_options(&rm),
            DeleteOptions {
                if_match: Some(2),
                fields: vec!["a".into(), "b".into(), "c".into()],
                return_previous: false,
            }
        );
        let args = parse(&["patch", "k", "{}", "--ttl", "5"]).unwrap();
        let StoreCommand::Patch(patch) = args.command else {
            panic!("not patch")
        };
        assert_eq!(patch_options(&patch).ttl_seconds, Some(5));
    }

    #[test]
    fn ops_json_must_be_an_array_of_ops() {
        let ops = parse_ops(json!([
            {"op": "increment", "field": "n", "by": 2},
            {"op": "set_add", "field": "s", "members": ["a"]}
        ]))
        .unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1].name(), "set_add");
        assert_eq!(parse_ops(json!({"op": "increment"})).unwrap_err().exit, 2);
        assert_eq!(parse_ops(json!([1])).unwrap_err().exit, 2);
    }
}
