//! The atomic field operations of `POST /v1/{store}/{key}/ops` (API.md, "Atomic field
//! operations"): their request form, the checks that need no stored value, and their effect on
//! the stored object.
//!
//! Choices where the contract is silent:
//!
//! - Ops are numbered from 0, their index in the request's `ops` array; every 400 and 409 names
//!   that index ("op 2: …") and the op's `field`, never a value.
//! - A field that is absent is "missing"; a field holding `null` is not missing but of the wrong
//!   type. On a missing field `increment` creates it at `by`, `list_push` and `set_add` create it
//!   (also with no values), and `list_pop`, `list_peek`, `set_remove` and `set_contains` create
//!   nothing and report empty results (`[]`, `0`, all `false`). `list_pop` leaves an emptied
//!   list in place as `[]`.
//! - `increment`: two integers (written without point or exponent) add exactly and stay an
//!   integer while the sum fits i64 or u64; otherwise both are added as f64 (a float result is
//!   written like `6.0`), and a sum that is not finite is a 409 ("increment overflows"). A stored
//!   number that is not a finite f64 (`1e400`) is a 409; such a `by` is a 400.
//! - `list_push` with `end: "front"` puts the values before the old elements in the order given
//!   (`[a, b]` on `[x]` gives `[a, b, x]`, like JavaScript's `unshift`). `list_pop` returns the
//!   removed elements in the order they were removed: from the front first element first, from
//!   the back last element first.
//! - A set is an array of strings and numbers: numbers first in ascending numeric order, then
//!   strings in the byte order of their UTF-8. Numbers compare by their exact decimal value (not
//!   as f64, so large integers that round to the same f64 stay distinct): `1`, `1.0` and `1e0`
//!   are one member, and the one already stored keeps its text (within one `set_add`, the first
//!   given). Exponents beyond ±9.2·10^18 saturate and compare equal. A stored array that is not
//!   such a set (another element type, wrong order, a duplicate) is a 409 for every set op: the
//!   ops never silently reorder or shrink an array the application wrote as a list.
//! - An optional parameter given as `null` counts as omitted (`"by": null` is `by` 1), as SDKs
//!   often send unset options that way; any other wrong type is a deserialization error (400).
//! - On any 409 the target is left exactly as it was, including member order: the ops that
//!   already ran are undone.

use std::cmp::Ordering;
use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Number, Value};

use crate::error::CoreError;

/// One operation of an ops request, as the client sends it (tagged by `"op"`).
///
/// Prefer [`parse_ops`] over the `Deserialize` impl for request bodies: serde's internally
/// tagged enums buffer their input, which can rewrite number texts inside `values`, `members` and
/// `by` (`-0` becomes `0`, `1e2` becomes `1e+2`) and refuses integers beyond 64 bits
/// altogether, and serde's error messages may quote the input.
#[derive(Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum FieldOp {
    /// Add `by` (default 1) to a number, creating the field at `by`.
    Increment {
        field: String,
        #[serde(default)]
        by: Option<Number>,
    },
    /// Append (default) or prepend `values` to a list; the result is the new length.
    ListPush {
        field: String,
        values: Vec<Value>,
        #[serde(default)]
        end: Option<End>,
    },
    /// Remove and return up to `count` (default 1) elements from the front (default) or back.
    ListPop {
        field: String,
        #[serde(default)]
        count: Option<u64>,
        #[serde(default)]
        end: Option<End>,
    },
    /// Return the first `count` (default 1) elements without removing them.
    ListPeek {
        field: String,
        #[serde(default)]
        count: Option<u64>,
    },
    /// Add members to a set; the result is how many were new.
    SetAdd { field: String, members: Vec<Value> },
    /// Remove members from a set; the result is how many were there.
    SetRemove { field: String, members: Vec<Value> },
    /// Test membership; the result is one bool per member.
    SetContains { field: String, members: Vec<Value> },
}

/// Which end of a list an op works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    Front,
    Back,
}

impl FieldOp {
    /// The top-level field the op works on.
    pub fn field(&self) -> &str {
        match self {
            FieldOp::Increment { field, .. }
            | FieldOp::ListPush { field, .. }
            | FieldOp::ListPop { field, .. }
            | FieldOp::ListPeek { field, .. }
            | FieldOp::SetAdd { field, .. }
            | FieldOp::SetRemove { field, .. }
            | FieldOp::SetContains { field, .. } => field,
        }
    }

    /// Whether the op only reads (`list_peek`, `set_contains`): a request made only of these
    /// needs only the read scope and never writes.
    pub fn is_read_only(&self) -> bool {
        matches!(self, FieldOp::ListPeek { .. } | FieldOp::SetContains { .. })
    }

    /// The op's name as the client writes it.
    fn name(&self) -> &'static str {
        match self {
            FieldOp::Increment { .. } => "increment",
            FieldOp::ListPush { .. } => "list_push",
            FieldOp::ListPop { .. } => "list_pop",
            FieldOp::ListPeek { .. } => "list_peek",
            FieldOp::SetAdd { .. } => "set_add",
            FieldOp::SetRemove { .. } => "set_remove",
            FieldOp::SetContains { .. } => "set_contains",
        }
    }
}

/// Shows the op, its field and its parameters, but of `values`, `members` and `by` only their
/// number or presence: they are application data and may be secret.
impl fmt::Debug for FieldOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct(self.name());
        out.field("field", &self.field());
        match self {
            FieldOp::Increment { by, .. } => {
                out.field("by", &by.as_ref().map(|_| Redacted));
            }
            FieldOp::ListPush { values, end, .. } => {
                out.field("values", &format_args!("<{} values>", values.len()));
                out.field("end", end);
            }
            FieldOp::ListPop { count, end, .. } => {
                out.field("count", count);
                out.field("end", end);
            }
            FieldOp::ListPeek { count, .. } => {
                out.field("count", count);
            }
            FieldOp::SetAdd { members, .. }
            | FieldOp::SetRemove { members, .. }
            | FieldOp::SetContains { members, .. } => {
                out.field("members", &format_args!("<{} members>", members.len()));
            }
        }
        out.finish()
    }
}

/// Reads the `ops` array of a request body (a value from [`crate::json::parse_strict`], so
/// already free of repeated names and within the depth limit) and runs [`validate_ops`].
///
/// Accepts exactly what the `Deserialize` impl accepts (same names, defaults, `null` for an
/// omitted option, unknown parameters refused), but moves `values`, `members` and `by` over
/// untouched, so their numbers stay exactly as written, and its messages name the op index and
/// the parameter, never the input. Every error is [`CoreError::InvalidRequest`].
pub fn parse_ops(ops: Value) -> Result<Vec<FieldOp>, CoreError> {
    let ops = read_ops(ops)?;
    validate_ops(&ops)?;
    Ok(ops)
}

/// Validate ops independent of any stored value: 1..=100 ops, field non-empty, count >= 1 (0 is
/// 400), set members are strings or numbers only (400 otherwise), `by` a finite number. The
/// caller checks that values and members are within the depth and size limits. Returns
/// [`CoreError::InvalidRequest`] naming the op index.
pub fn validate_ops(ops: &[FieldOp]) -> Result<(), CoreError> {
    if ops.is_empty() || ops.len() > MAX_OPS {
        return Err(CoreError::InvalidRequest(format!(
            "ops must hold 1 to {MAX_OPS} operations"
        )));
    }
    for (index, op) in ops.iter().enumerate() {
        let invalid = |what: String| CoreError::InvalidRequest(format!("op {index}: {what}"));
        if op.field().is_empty() {
            return Err(invalid("field must not be empty".to_owned()));
        }
        match op {
            FieldOp::Increment { by: Some(by), .. } if by.as_f64().is_none() => {
                return Err(invalid("by must be a finite number".to_owned()));
            }
            FieldOp::ListPop { count: Some(0), .. } | FieldOp::ListPeek { count: Some(0), .. } => {
                return Err(invalid("count must be at least 1".to_owned()));
            }
            FieldOp::SetAdd { members, .. }
            | FieldOp::SetRemove { members, .. }
            | FieldOp::SetContains { members, .. } => {
                if let Some(position) = members.iter().position(|m| !is_member(m)) {
                    return Err(invalid(format!(
                        "members[{position}] must be a string or a number"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Apply ops in order to `target` (the stored object; a missing record is passed as an empty
/// Map by the caller). On any op that doesn't fit (field holds the wrong type, e.g. increment on
/// a string, list op on a non-array, set op on a non-array or an array that is not a valid set),
/// return `CoreError::Conflict("op N: …")` and leave `target` UNCHANGED. Returns one result per
/// op: increment → the new number; list_push → new length; list_pop → array of removed elements
/// (fewer if the list is shorter; missing field → []); list_peek → array of up to count elements
/// (missing field → []); set_add → number added; set_remove → number removed; set_contains →
/// array of bools.
///
/// Runs [`validate_ops`] first (the caller has usually done so already), so invalid ops are
/// [`CoreError::InvalidRequest`] here too and never half-applied.
pub fn apply_ops(
    target: &mut Map<String, Value>,
    ops: &[FieldOp],
) -> Result<Vec<Value>, CoreError> {
    validate_ops(ops)?;
    // Each field's value before the first op that may change it, to undo a failed request.
    // Snapshotting only touched fields costs far less than cloning the whole object.
    let mut before: Vec<(&str, Option<Value>)> = Vec::new();
    let mut results = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let field = op.field();
        if !op.is_read_only() && !before.iter().any(|(f, _)| *f == field) {
            before.push((field, target.get(field).cloned()));
        }
        match apply_one(target, index, op) {
            Ok(result) => results.push(result),
            Err(e) => {
                undo(target, before);
                return Err(e);
            }
        }
    }
    Ok(results)
}

const MAX_OPS: usize = 100;

/// Stands in for application data in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// [`parse_ops`] without the validation.
fn read_ops(ops: Value) -> Result<Vec<FieldOp>, CoreError> {
    let Value::Array(items) = ops else {
        return Err(CoreError::InvalidRequest("ops must be an array".to_owned()));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| read_op(index, item))
        .collect()
}

/// Reads one op, mirroring the `Deserialize` impl of [`FieldOp`].
fn read_op(index: usize, item: Value) -> Result<FieldOp, CoreError> {
    let invalid = |what: &str| CoreError::InvalidRequest(format!("op {index}: {what}"));
    let Value::Object(mut params) = item else {
        return Err(invalid("must be an object"));
    };
    let name = match params.remove("op") {
        Some(Value::String(name)) => name,
        Some(_) => return Err(invalid("op must be a string")),
        None => return Err(invalid("missing parameter \"op\"")),
    };
    let allowed: &[&str] = match name.as_str() {
        "increment" => &["field", "by"],
        "list_push" => &["field", "values", "end"],
        "list_pop" => &["field", "count", "end"],
        "list_peek" => &["field", "count"],
        "set_add" | "set_remove" | "set_contains" => &["field", "members"],
        _ => {
            return Err(invalid(
                "unknown op; expected increment, list_push, list_pop, list_peek, set_add, \
                 set_remove or set_contains",
            ));
        }
    };
    // The unknown name itself is never repeated (ARCHITECTURE.md, invariant 6): whatever the
    // caller put there may be a secret pasted into the wrong place.
    if params.keys().any(|k| !allowed.contains(&k.as_str())) {
        let accepted: Vec<String> = std::iter::once("op")
            .chain(allowed.iter().copied())
            .map(|a| format!("`{a}`"))
            .collect();
        return Err(CoreError::InvalidRequest(format!(
            "op {index}: unknown parameter for {name} (accepted: {})",
            accepted.join(", ")
        )));
    }
    let field = match params.remove("field") {
        Some(Value::String(field)) => field,
        Some(_) => return Err(invalid("field must be a string")),
        None => return Err(invalid("missing parameter \"field\"")),
    };
    // `null` counts as omitted for the optional parameters, as `Option` does in serde.
    let mut optional = |key: &str| params.remove(key).filter(|v| !v.is_null());
    let count = match optional("count") {
        None => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| invalid("count must be a positive integer"))?,
        ),
        Some(_) => return Err(invalid("count must be a positive integer")),
    };
    let end = match optional("end") {
        None => None,
        Some(Value::String(end)) if end == "front" => Some(End::Front),
        Some(Value::String(end)) if end == "back" => Some(End::Back),
        Some(_) => return Err(invalid("end must be \"front\" or \"back\"")),
    };
    let by = match optional("by") {
        None => None,
        Some(Value::Number(by)) => Some(by),
        Some(_) => return Err(invalid("by must be a number")),
    };
    let mut array = |key: &str| match params.remove(key) {
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(&format!("{key} must be an array"))),
        None => Err(invalid(&format!("missing parameter {key:?}"))),
    };
    Ok(match name.as_str() {
        "increment" => FieldOp::Increment { field, by },
        "list_push" => FieldOp::ListPush {
            field,
            values: array("values")?,
            end,
        },
        "list_pop" => FieldOp::ListPop { field, count, end },
        "list_peek" => FieldOp::ListPeek { field, count },
        "set_add" => FieldOp::SetAdd {
            field,
            members: array("members")?,
        },
        "set_remove" => FieldOp::SetRemove {
            field,
            members: array("members")?,
        },
        _ => FieldOp::SetContains {
            field,
            members: array("members")?,
        },
    })
}

/// Puts back the fields saved in `before`. Values are replaced in place and created fields
/// removed with `shift_remove`, so member order is restored exactly as well.
fn undo(target: &mut Map<String, Value>, before: Vec<(&str, Option<Value>)>) {
    for (field, old) in before.into_iter().rev() {
        match old {
            Some(value) => {
                // `insert` on an existing name keeps its position.
                target.insert(field.to_owned(), value);
            }
            None => {
                target.shift_remove(field);
            }
        }
    }
}

/// Applies one validated op. An op that fails may have changed its own field; the caller undoes
/// that.
fn apply_one(
    target: &mut Map<String, Value>,
    index: usize,
    op: &FieldOp,
) -> Result<Value, CoreError> {
    let field = op.field();
    let wrong_type = |wanted: &str| {
        CoreError::Conflict(format!(
            "op {index}: {} needs {wanted} in field {field:?}",
            op.name()
        ))
    };
    match op {
        FieldOp::Increment { by, .. } => {
            let by = by.clone().unwrap_or_else(|| Number::from(1));
            let sum = match target.get(field) {
                None => by,
                Some(Value::Number(current)) => {
                    let current = Operand::of(current).ok_or_else(|| {
                        CoreError::Conflict(format!(
                            "op {index}: the number in field {field:?} is out of range for increment"
                        ))
                    })?;
                    let by = Operand::of(&by).ok_or_else(|| {
                        CoreError::InvalidRequest(format!("op {index}: by must be a finite number"))
                    })?;
                    current.add(by).ok_or_else(|| {
                        CoreError::Conflict(format!("op {index}: increment overflows"))
                    })?
                }
                Some(_) => return Err(wrong_type("a number")),
            };
            target.insert(field.to_owned(), Value::Number(sum.clone()));
            Ok(Value::Number(sum))
        }
        FieldOp::ListPush { values, end, .. } => {
            let len = match target.get_mut(field) {
                None => {
                    target.insert(field.to_owned(), Value::Array(values.clone()));
                    values.len()
                }
                Some(Value::Array(list)) => {
                    match end.unwrap_or(End::Back) {
                        End::Back => list.extend(values.iter().cloned()),
                        End::Front => {
                            list.splice(0..0, values.iter().cloned());
                        }
                    }
                    list.len()
                }
                Some(_) => return Err(wrong_type("an array")),
            };
            Ok(Value::from(len))
        }
        FieldOp::ListPop { count, end, .. } => match target.get_mut(field) {
            None => Ok(Value::Array(Vec::new())),
            Some(Value::Array(list)) => {
                let n = clamp_count(*count, list.len());
                let removed: Vec<Value> = match end.unwrap_or(End::Front) {
                    End::Front => list.drain(..n).collect(),
                    End::Back => {
                        let start = list.len() - n;
                        list.drain(start..).rev().collect()
                    }
                };
                Ok(Value::Array(removed))
            }
            Some(_) => Err(wrong_type("an array")),
        },
        FieldOp::ListPeek { count, .. } => match target.get(field) {
            None => Ok(Value::Array(Vec::new())),
            Some(Value::Array(list)) => {
                let n = clamp_count(*count, list.len());
                Ok(Value::Array(list.iter().take(n).cloned().collect()))
            }
            Some(_) => Err(wrong_type("an array")),
        },
        FieldOp::SetAdd { members, .. } => {
            let added = match target.get_mut(field) {
                None => {
                    let mut set = Vec::new();
                    let added = set_add(&mut set, members);
                    target.insert(field.to_owned(), Value::Array(set));
                    added
                }
                Some(Value::Array(set)) if is_set(set) => set_add(set, members),
                Some(_) => return Err(wrong_type("a set")),
            };
            Ok(Value::from(added))
        }
        FieldOp::SetRemove { members, .. } => {
            let removed = match target.get_mut(field) {
                None => 0,
                Some(Value::Array(set)) if is_set(set) => {
                    let mut removed = 0;
                    for member in members {
                        if let Ok(position) = find_member(set, member) {
                            set.remove(position);
                            removed += 1;
                        }
                    }
                    removed
                }
                Some(_) => return Err(wrong_type("a set")),
            };
            Ok(Value::from(removed))
        }
        FieldOp::SetContains { members, .. } => {
            let found: Vec<Value> = match target.get(field) {
                None => members.iter().map(|_| Value::Bool(false)).collect(),
                Some(Value::Array(set)) if is_set(set) => members
                    .iter()
                    .map(|member| Value::Bool(find_member(set, member).is_ok()))
                    .collect(),
                Some(_) => return Err(wrong_type("a set")),
            };
            Ok(Value::Array(found))
        }
    }
}

/// `count` (default 1) limited to `len`.
fn clamp_count(count: Option<u64>, len: usize) -> usize {
    usize::try_from(count.unwrap_or(1)).map_or(len, |c| c.min(len))
}

/// A number as increment computes with it.
#[derive(Clone, Copy)]
enum Operand {
    /// An integer within i128 (which holds all of i64 and u64).
    Int(i128),
    /// Any other finite number.
    Float(f64),
}

impl Operand {
    /// `None` when the number is not a finite f64 (`1e400`).
    fn of(n: &Number) -> Option<Operand> {
        // An integer's text has no point or exponent; `2.0` and `1e2` add as floats.
        let text = n.as_str();
        if !text.contains(['.', 'e', 'E'])
            && let Ok(i) = text.parse::<i128>()
        {
            return Some(Operand::Int(i));
        }
        n.as_f64().map(Operand::Float)
    }

    fn as_f64(self) -> f64 {
        match self {
            // Rounding is intended: this is the float fallback.
            Operand::Int(i) => i as f64,
            Operand::Float(f) => f,
        }
    }

    /// The sum, or `None` when it is not a finite number.
    fn add(self, other: Operand) -> Option<Number> {
        if let (Operand::Int(a), Operand::Int(b)) = (self, other)
            && let Some(sum) = a.checked_add(b)
        {
            if let Ok(i) = i64::try_from(sum) {
                return Some(Number::from(i));
            }
            if let Ok(u) = u64::try_from(sum) {
                return Some(Number::from(u));
            }
        }
        Number::from_f64(self.as_f64() + other.as_f64())
    }
}

/// Whether `v` may be a set member.
fn is_member(v: &Value) -> bool {
    matches!(v, Value::Number(_) | Value::String(_))
}

/// Whether `items` is a valid set: members only, strictly ascending in set order.
fn is_set(items: &[Value]) -> bool {
    items.iter().all(is_member)
        && items
            .windows(2)
            .all(|pair| matches!(pair, [a, b] if member_order(a, b) == Ordering::Less))
}

/// Adds the members missing from `set` at their place; returns how many were added.
fn set_add(set: &mut Vec<Value>, members: &[Value]) -> usize {
    let mut added = 0;
    for member in members {
        if let Err(position) = find_member(set, member) {
            set.insert(position, member.clone());
            added += 1;
        }
    }
    added
}

/// Binary search of a valid set: `Ok(position)` of the equal member, or `Err(position)` where
/// it belongs.
fn find_member(set: &[Value], member: &Value) -> Result<usize, usize> {
    set.binary_search_by(|probe| member_order(probe, member))
}

/// The set order: numbers (by exact value) before strings (by bytes). Both sides are members
/// (checked by `validate_ops` and `is_set`); anything else sorts after them and compares equal
/// to each other, which keeps this total without panicking.
fn member_order(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Number(_), _) => Ordering::Less,
        (_, Value::Number(_)) => Ordering::Greater,
        (Value::String(_), _) => Ordering::Less,
        (_, Value::String(_)) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

/// Compares two JSON numbers by their exact decimal value.
fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    let (x, y) = (Decimal::of(a.as_str()), Decimal::of(b.as_str()));
    let by_sign = x.sign().cmp(&y.sign());
    if by_sign != Ordering::Equal {
        return by_sign;
    }
    let by_magnitude = x.exp.cmp(&y.exp).then_with(|| x.digits().cmp(y.digits()));
    if x.sign() < 0 {
        by_magnitude.reverse()
    } else {
        by_magnitude
    }
}

/// The exact value of a JSON number's text, normalised: ±0.D × 10^exp where D are the
/// significant digits (no leading or trailing zeros). Zero has no digits.
struct Decimal<'a> {
    negative: bool,
    /// The digits before and after the point; D is their concatenation with `skip` leading
    /// digits dropped and `take` kept.
    int: &'a [u8],
    frac: &'a [u8],
    skip: usize,
    take: usize,
    exp: i64,
}

impl<'a> Decimal<'a> {
    /// Reads a JSON number text (`-? int (. frac)? ([eE] [+-]? digits)?`).
    fn of(text: &'a str) -> Decimal<'a> {
        let bytes = text.as_bytes();
        let (negative, unsigned) = match bytes.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, bytes),
        };
        let (mantissa, exponent) = split_at_byte(unsigned, |b| b == b'e' || b == b'E');
        let (int, frac) = split_at_byte(mantissa, |b| b == b'.');
        let all = || int.iter().chain(frac).copied();
        let total = int.len() + frac.len();
        let skip = all().take_while(|&d| d == b'0').count();
        let trailing = all().rev().take_while(|&d| d == b'0').count();
        let take = total.saturating_sub(skip + trailing);
        let exp = if take == 0 {
            0
        } else {
            // The point sits after `int`; every dropped leading zero moves it one place left.
            parse_exponent(exponent)
                .saturating_add(i64::try_from(int.len()).unwrap_or(i64::MAX))
                .saturating_sub(i64::try_from(skip).unwrap_or(i64::MAX))
        };
        Decimal {
            negative,
            int,
            frac,
            skip,
            take,
            exp,
        }
    }

    /// -1, 0 or 1; `-0` is 0.
    fn sign(&self) -> i8 {
        match (self.take, self.negative) {
            (0, _) => 0,
            (_, true) => -1,
            (_, false) => 1,
        }
    }

    fn digits(&self) -> impl Iterator<Item = u8> + '_ {
        self.int
            .iter()
            .chain(self.frac)
            .copied()
            .skip(self.skip)
            .take(self.take)
    }
}

/// Splits at the first byte matching `is_separator`, dropping it: `(before, after)`;
/// `(bytes, [])` when there is none.
fn split_at_byte(bytes: &[u8], is_separator: impl Fn(u8) -> bool) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| is_separator(b)) {
        Some(at) => {
            let (before, rest) = bytes.split_at(at);
            (before, rest.get(1..).unwrap_or_default())
        }
        None => (bytes, &[]),
    }
}

/// An exponent's value (`[+-]? digits`), saturating at the ends of i64.
fn parse_exponent(text: &[u8]) -> i64 {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let magnitude = digits.iter().fold(0i64, |acc, &d| {
        acc.saturating_mul(10)
            .saturating_add(i64::from(d.wrapping_sub(b'0')))
    });
    if negative { -magnitude } else { magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_strict;
    use proptest::prelude::*;

    fn parse(text: &str) -> Value {
        parse_strict(text.as_bytes(), 64).unwrap()
    }

    /// Ops as `parse_ops` reads them, without its validation.
    fn ops_of(text: &str) -> Vec<FieldOp> {
        read_ops(parse(text)).unwrap()
    }

    /// What a request should do: `Ok((results, stored object after))` or `Err(message part)`
    /// for a 409, after which the object must be unchanged.
    type Want = Result<(&'static str, &'static str), &'static str>;

    fn check(stored: &str, ops: &str, want: Want) {
        let Value::Object(mut target) = parse(stored) else {
            panic!("stored value must be an object: {stored}");
        };
        let original = Value::Object(target.clone()).to_string();
        let got = apply_ops(&mut target, &ops_of(ops));
        let after = Value::Object(target).to_string();
        match (got, want) {
            (Ok(results), Ok((want_results, want_after))) => {
                assert_eq!(
                    Value::Array(results).to_string(),
                    parse(want_results).to_string(),
                    "results of {ops} on {stored}"
                );
                assert_eq!(after, parse(want_after).to_string(), "{ops} on {stored}");
            }
            (Err(CoreError::Conflict(msg)), Err(fragment)) => {
                assert!(msg.contains(fragment), "{msg:?} lacks {fragment:?}");
                // Byte for byte, so member order is restored too.
                assert_eq!(after, original, "{ops} on {stored} changed the target");
            }
            (got, want) => panic!("{ops} on {stored}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn increment() {
        let cases: &[(&str, &str, Want)] = &[
            // Default by 1, creating the field.
            (
                "{}",
                r#"[{"op":"increment","field":"n"}]"#,
                Ok(("[1]", r#"{"n":1}"#)),
            ),
            (
                r#"{"n":5}"#,
                r#"[{"op":"increment","field":"n"}]"#,
                Ok(("[6]", r#"{"n":6}"#)),
            ),
            (
                "{}",
                r#"[{"op":"increment","field":"n","by":2.50}]"#,
                Ok(("[2.50]", r#"{"n":2.50}"#)),
            ),
            (
                r#"{"n":5}"#,
                r#"[{"op":"increment","field":"n","by":-7}]"#,
                Ok(("[-2]", r#"{"n":-2}"#)),
            ),
            (
                r#"{"n":1.5}"#,
                r#"[{"op":"increment","field":"n","by":1}]"#,
                Ok(("[2.5]", r#"{"n":2.5}"#)),
            ),
            (
                r#"{"n":5}"#,
                r#"[{"op":"increment","field":"n","by":1.0}]"#,
                Ok(("[6.0]", r#"{"n":6.0}"#)),
            ),
            (
                r#"{"n":-0}"#,
                r#"[{"op":"increment","field":"n","by":0}]"#,
                Ok(("[0]", r#"{"n":0}"#)),
            ),
            // Repeated increments see each other.
            (
                r#"{"a":1,"n":0,"z":2}"#,
                r#"[{"op":"increment","field":"n"},{"op":"increment","field":"n","by":10}]"#,
                Ok(("[1,11]", r#"{"a":1,"n":11,"z":2}"#)),
            ),
            // Integer limits: exact across i64 into u64, float beyond.
            (
                r#"{"n":9223372036854775807}"#,
                r#"[{"op":"increment","field":"n"}]"#,
                Ok(("[9223372036854775808]", r#"{"n":9223372036854775808}"#)),
            ),
            (
                r#"{"n":18446744073709551615}"#,
                r#"[{"op":"increment","field":"n","by":-18446744073709551615}]"#,
                Ok(("[0]", r#"{"n":0}"#)),
            ),
            (
                r#"{"n":18446744073709551615}"#,
                r#"[{"op":"increment","field":"n"}]"#,
                Ok((
                    "[1.8446744073709552e+19]",
                    r#"{"n":1.8446744073709552e+19}"#,
                )),
            ),
            (
                r#"{"n":-9223372036854775808}"#,
                r#"[{"op":"increment","field":"n","by":-1}]"#,
                Ok((
                    "[-9.223372036854776e+18]",
                    r#"{"n":-9.223372036854776e+18}"#,
                )),
            ),
            (
                r#"{"n":12345678901234567890123}"#,
                r#"[{"op":"increment","field":"n"}]"#,
                Ok((
                    "[1.2345678901234568e+22]",
                    r#"{"n":1.2345678901234568e+22}"#,
                )),
            ),
            // Float overflow and out-of-range stored numbers.
            (
                r#"{"n":1.7e308}"#,
                r#"[{"op":"increment","field":"n","by":1.7e308}]"#,
                Err("op 0: increment overflows"),
            ),
            (
                r#"{"n":1e400}"#,
                r#"[{"op":"increment","field":"n"}]"#,
                Err("op 0: the number in field \"n\" is out of range"),
            ),
            // Wrong types.
            (
                r#"{"n":"5"}"#,
                r#"[{"op":"increment","field":"n"}]"#,
                Err("op 0: increment needs a number in field \"n\""),
            ),
            (
                r#"{"n":null}"#,
                r#"[{"op":"increment","field":"n"}]"#,
                Err("op 0: increment needs a number"),
            ),
            (
                r#"{"n":[1]}"#,
                r#"[{"op":"increment","field":"n"}]"#,
                Err("op 0: increment needs a number"),
            ),
        ];
        for (stored, ops, want) in cases {
            check(stored, ops, *want);
        }
    }

    #[test]
    fn lists() {
        let cases: &[(&str, &str, Want)] = &[
            // list_push: default back, front keeps the given order, creates the list.
            (
                "{}",
                r#"[{"op":"list_push","field":"l","values":[1,"a",{"x":null}]}]"#,
                Ok(("[3]", r#"{"l":[1,"a",{"x":null}]}"#)),
            ),
            (
                r#"{"l":[1,2]}"#,
                r#"[{"op":"list_push","field":"l","values":[3,4]}]"#,
                Ok(("[4]", r#"{"l":[1,2,3,4]}"#)),
            ),
            (
                r#"{"l":[1,2]}"#,
                r#"[{"op":"list_push","field":"l","values":[3,4],"end":"back"}]"#,
                Ok(("[4]", r#"{"l":[1,2,3,4]}"#)),
            ),
            (
                r#"{"l":[1,2]}"#,
                r#"[{"op":"list_push","field":"l","values":[3,4],"end":"front"}]"#,
                Ok(("[4]", r#"{"l":[3,4,1,2]}"#)),
            ),
            (
                "{}",
                r#"[{"op":"list_push","field":"l","values":[3,4],"end":"front"}]"#,
                Ok(("[2]", r#"{"l":[3,4]}"#)),
            ),
            (
                "{}",
                r#"[{"op":"list_push","field":"l","values":[]}]"#,
                Ok(("[0]", r#"{"l":[]}"#)),
            ),
            (
                r#"{"l":{}}"#,
                r#"[{"op":"list_push","field":"l","values":[1]}]"#,
                Err("op 0: list_push needs an array in field \"l\""),
            ),
            // list_pop: default 1 from the front; back pops come last first.
            (
                r#"{"l":[1,2,3]}"#,
                r#"[{"op":"list_pop","field":"l"}]"#,
                Ok(("[[1]]", r#"{"l":[2,3]}"#)),
            ),
            (
                r#"{"l":[1,2,3]}"#,
                r#"[{"op":"list_pop","field":"l","count":2}]"#,
                Ok(("[[1,2]]", r#"{"l":[3]}"#)),
            ),
            (
                r#"{"l":[1,2,3]}"#,
                r#"[{"op":"list_pop","field":"l","end":"back"}]"#,
                Ok(("[[3]]", r#"{"l":[1,2]}"#)),
            ),
            (
                r#"{"l":[1,2,3]}"#,
                r#"[{"op":"list_pop","field":"l","count":2,"end":"back"}]"#,
                Ok(("[[3,2]]", r#"{"l":[1]}"#)),
            ),
            (
                r#"{"l":[1,2,3]}"#,
                r#"[{"op":"list_pop","field":"l","count":10,"end":"front"}]"#,
                Ok(("[[1,2,3]]", r#"{"l":[]}"#)),
            ),
            (
                r#"{"l":[1,2,3]}"#,
                r#"[{"op":"list_pop","field":"l","count":18446744073709551615,"end":"back"}]"#,
                Ok(("[[3,2,1]]", r#"{"l":[]}"#)),
            ),
            (
                r#"{"l":[]}"#,
                r#"[{"op":"list_pop","field":"l"}]"#,
                Ok(("[[]]", r#"{"l":[]}"#)),
            ),
            (
                r#"{"a":1}"#,
                r#"[{"op":"list_pop","field":"l","count":3}]"#,
                Ok(("[[]]", r#"{"a":1}"#)),
            ),
            (
                r#"{"l":"abc"}"#,
                r#"[{"op":"list_pop","field":"l"}]"#,
                Err("op 0: list_pop needs an array in field \"l\""),
            ),
            // list_peek: from the front, nothing changes.
            (
                r#"{"l":[1,2,3]}"#,
                r#"[{"op":"list_peek","field":"l"}]"#,
                Ok(("[[1]]", r#"{"l":[1,2,3]}"#)),
            ),
            (
                r#"{"l":[1,2,3]}"#,
                r#"[{"op":"list_peek","field":"l","count":2}]"#,
                Ok(("[[1,2]]", r#"{"l":[1,2,3]}"#)),
            ),
            (
                r#"{"l":[1,2,3]}"#,
                r#"[{"op":"list_peek","field":"l","count":9}]"#,
                Ok(("[[1,2,3]]", r#"{"l":[1,2,3]}"#)),
            ),
            (
                "{}",
                r#"[{"op":"list_peek","field":"l"}]"#,
                Ok(("[[]]", "{}")),
            ),
            (
                r#"{"l":1}"#,
                r#"[{"op":"list_peek","field":"l"}]"#,
                Err("op 0: list_peek needs an array"),
            ),
            // Ops in sequence see each other.
            (
                "{}",
                r#"[{"op":"list_push","field":"q","values":["a","b"]},
                    {"op":"list_push","field":"q","values":["z"],"end":"front"},
                    {"op":"list_peek","field":"q","count":2},
                    {"op":"list_pop","field":"q","end":"back"},
                    {"op":"list_pop","field":"q"}]"#,
                Ok((r#"[2,3,["z","a"],["b"],["z"]]"#, r#"{"q":["a"]}"#)),
            ),
        ];
        for (stored, ops, want) in cases {
            check(stored, ops, *want);
        }
    }

    #[test]
    fn sets() {
        let cases: &[(&str, &str, Want)] = &[
            // Numbers first in numeric order, then strings in byte order.
            (
                "{}",
                r#"[{"op":"set_add","field":"s","members":["b",10,"B","a",-1,2.5,"é","10",1e2]}]"#,
                Ok(("[9]", r#"{"s":[-1,2.5,10,1e2,"10","B","a","b","é"]}"#)),
            ),
            (
                r#"{"s":[1,3,"a","c"]}"#,
                r#"[{"op":"set_add","field":"s","members":["b",2,"a",3,0]}]"#,
                Ok(("[3]", r#"{"s":[0,1,2,3,"a","b","c"]}"#)),
            ),
            // Numeric dedup keeps the stored text, or the first given.
            (
                r#"{"s":[1,"x"]}"#,
                r#"[{"op":"set_add","field":"s","members":[1.0,1e0,10e-1,0.1e1,"1"]}]"#,
                Ok(("[1]", r#"{"s":[1,"1","x"]}"#)),
            ),
            (
                "{}",
                r#"[{"op":"set_add","field":"s","members":[2.50,2.5,-0,0,0.0e5]}]"#,
                Ok(("[2]", r#"{"s":[-0,2.50]}"#)),
            ),
            // Large integers that share an f64 stay distinct.
            (
                "{}",
                r#"[{"op":"set_add","field":"s","members":[9007199254740993,9007199254740992,12345678901234567890124,12345678901234567890123]}]"#,
                Ok((
                    "[4]",
                    r#"{"s":[9007199254740992,9007199254740993,12345678901234567890123,12345678901234567890124]}"#,
                )),
            ),
            (
                "{}",
                r#"[{"op":"set_add","field":"s","members":[]}]"#,
                Ok(("[0]", r#"{"s":[]}"#)),
            ),
            // set_remove and set_contains compare the same way.
            (
                r#"{"s":[1,2.5,"a"]}"#,
                r#"[{"op":"set_remove","field":"s","members":[1.00,"a","a","zz",7]}]"#,
                Ok(("[2]", r#"{"s":[2.5]}"#)),
            ),
            (
                "{}",
                r#"[{"op":"set_remove","field":"s","members":[1]}]"#,
                Ok(("[0]", "{}")),
            ),
            (
                r#"{"s":[-3,1,2.5,"a"]}"#,
                r#"[{"op":"set_contains","field":"s","members":[1e0,25e-1,"a","A",-3.0,"1",4]}]"#,
                Ok((
                    "[[true,true,true,false,true,false,false]]",
                    r#"{"s":[-3,1,2.5,"a"]}"#,
                )),
            ),
            (
                "{}",
                r#"[{"op":"set_contains","field":"s","members":["a",1]}]"#,
                Ok(("[[false,false]]", "{}")),
            ),
            (
                "{}",
                r#"[{"op":"set_add","field":"s","members":["x"]},
                    {"op":"set_contains","field":"s","members":["x","y"]},
                    {"op":"set_remove","field":"s","members":["x"]},
                    {"op":"set_contains","field":"s","members":["x"]}]"#,
                Ok(("[1,[true,false],1,[false]]", r#"{"s":[]}"#)),
            ),
            // Stored arrays that are not valid sets.
            (
                r#"{"s":"a"}"#,
                r#"[{"op":"set_add","field":"s","members":["a"]}]"#,
                Err("op 0: set_add needs a set in field \"s\""),
            ),
            (
                r#"{"s":["a",true]}"#,
                r#"[{"op":"set_contains","field":"s","members":["a"]}]"#,
                Err("op 0: set_contains needs a set"),
            ),
            (
                r#"{"s":[["a"]]}"#,
                r#"[{"op":"set_remove","field":"s","members":["a"]}]"#,
                Err("op 0: set_remove needs a set"),
            ),
            (
                r#"{"s":["b","a"]}"#,
                r#"[{"op":"set_add","field":"s","members":["c"]}]"#,
                Err("op 0: set_add needs a set"),
            ),
            (
                r#"{"s":["a",1]}"#,
                r#"[{"op":"set_add","field":"s","members":["c"]}]"#,
                Err("op 0: set_add needs a set"),
            ),
            (
                r#"{"s":[1,1.0]}"#,
                r#"[{"op":"set_add","field":"s","members":["c"]}]"#,
                Err("op 0: set_add needs a set"),
            ),
            (
                r#"{"s":null}"#,
                r#"[{"op":"set_add","field":"s","members":["c"]}]"#,
                Err("op 0: set_add needs a set"),
            ),
        ];
        for (stored, ops, want) in cases {
            check(stored, ops, *want);
        }
    }

    #[test]
    fn a_conflict_undoes_everything() {
        let cases: &[(&str, &str, Want)] = &[
            // Earlier ops changed, created and emptied fields; a later op does not fit.
            (
                r#"{"a":1,"l":[1,2],"s":[1],"t":"x","z":true}"#,
                r#"[{"op":"increment","field":"a"},
                    {"op":"list_pop","field":"l","count":5},
                    {"op":"list_push","field":"new","values":[1]},
                    {"op":"set_add","field":"s","members":[0]},
                    {"op":"increment","field":"n2"},
                    {"op":"list_push","field":"t","values":[1]}]"#,
                Err("op 5: list_push needs an array in field \"t\""),
            ),
            // The failing op itself worked on a field an earlier op changed.
            (
                r#"{"n":1}"#,
                r#"[{"op":"increment","field":"n"},{"op":"set_add","field":"n","members":[1]}]"#,
                Err("op 1: set_add needs a set"),
            ),
            (
                "{}",
                r#"[{"op":"increment","field":"n","by":1.7e308},
                    {"op":"increment","field":"n","by":1.7e308}]"#,
                Err("op 1: increment overflows"),
            ),
        ];
        for (stored, ops, want) in cases {
            check(stored, ops, *want);
        }
    }

    /// An op's parameters in comparable form: its `Debug` text and the data it carries.
    fn parts(op: &FieldOp) -> (String, Vec<Value>) {
        let data = match op {
            FieldOp::Increment { by, .. } => by.iter().cloned().map(Value::Number).collect(),
            FieldOp::ListPush { values, .. } => values.clone(),
            FieldOp::SetAdd { members, .. }
            | FieldOp::SetRemove { members, .. }
            | FieldOp::SetContains { members, .. } => members.clone(),
            FieldOp::ListPop { .. } | FieldOp::ListPeek { .. } => Vec::new(),
        };
        (format!("{op:?}"), data)
    }

    /// Requests both readers refuse, with the message `parse_ops` gives.
    #[test]
    fn malformed_ops_are_refused() {
        let cases: &[(&str, &str)] = &[
            (r#"{"op":"increment"}"#, "ops must be an array"),
            (r#"["increment"]"#, "op 0: must be an object"),
            (r#"[{"op":"decrement","field":"n"}]"#, "op 0: unknown op"),
            (r#"[{"op":"Increment","field":"n"}]"#, "op 0: unknown op"),
            (r#"[{"op":1,"field":"n"}]"#, "op 0: op must be a string"),
            (r#"[{"field":"n"}]"#, "op 0: missing parameter \"op\""),
            (
                r#"[{"op":"increment"}]"#,
                "op 0: missing parameter \"field\"",
            ),
            (
                r#"[{"op":"increment","field":7}]"#,
                "op 0: field must be a string",
            ),
            (
                r#"[{"op":"increment","field":null}]"#,
                "op 0: field must be a string",
            ),
            (
                r#"[{"op":"increment","field":"n"},{"op":"increment","field":"n","step":1}]"#,
                "op 1: unknown parameter for increment (accepted: `op`, `field`, `by`)",
            ),
            (
                r#"[{"op":"list_peek","field":"l","end":"back"}]"#,
                "op 0: unknown parameter for list_peek (accepted: `op`, `field`, `count`)",
            ),
            (
                r#"[{"op":"set_add","field":"s","members":[],"values":[]}]"#,
                "op 0: unknown parameter for set_add",
            ),
            (
                r#"[{"op":"increment","field":"n","by":"1"}]"#,
                "op 0: by must be a number",
            ),
            (
                r#"[{"op":"increment","field":"n","by":[1]}]"#,
                "op 0: by must be a number",
            ),
            (
                r#"[{"op":"list_pop","field":"l","count":"2"}]"#,
                "op 0: count must be a positive integer",
            ),
            (
                r#"[{"op":"list_pop","field":"l","count":-1}]"#,
                "op 0: count must be a positive integer",
            ),
            (
                r#"[{"op":"list_pop","field":"l","count":1.5}]"#,
                "op 0: count must be a positive integer",
            ),
            (
                r#"[{"op":"list_peek","field":"l","count":18446744073709551616}]"#,
                "op 0: count must be a positive integer",
            ),
            (
                r#"[{"op":"list_pop","field":"l","end":"middle"}]"#,
                "op 0: end must be \"front\" or \"back\"",
            ),
            (
                r#"[{"op":"list_pop","field":"l","end":"Front"}]"#,
                "op 0: end must be \"front\" or \"back\"",
            ),
            (
                r#"[{"op":"list_pop","field":"l","end":0}]"#,
                "op 0: end must be",
            ),
            (
                r#"[{"op":"list_push","field":"l"}]"#,
                "op 0: missing parameter \"values\"",
            ),
            (
                r#"[{"op":"list_push","field":"l","values":1}]"#,
                "op 0: values must be an array",
            ),
            (
                r#"[{"op":"list_push","field":"l","values":null}]"#,
                "op 0: values must be an array",
            ),
            (
                r#"[{"op":"set_add","field":"s"}]"#,
                "op 0: missing parameter \"members\"",
            ),
            (
                r#"[{"op":"set_contains","field":"s","members":"a"}]"#,
                "op 0: members must be an array",
            ),
        ];
        for (text, fragment) in cases {
            assert!(
                serde_json::from_value::<Vec<FieldOp>>(parse(text)).is_err(),
                "from_value accepted {text}"
            );
            assert!(
                serde_json::from_str::<Vec<FieldOp>>(text).is_err(),
                "from_str accepted {text}"
            );
            match parse_ops(parse(text)) {
                Err(CoreError::InvalidRequest(msg)) => {
                    assert!(msg.contains(fragment), "{text}: {msg:?} lacks {fragment:?}")
                }
                other => panic!("{text}: got {other:?}"),
            }
        }
    }

    /// Where serde can represent the input, both readers agree, defaults included.
    #[test]
    fn parse_ops_agrees_with_deserialize() {
        let text = r#"[
            {"op":"increment","field":"n"},
            {"op":"increment","field":"n","by":null},
            {"op":"increment","field":"n","by":-2.5},
            {"op":"list_push","field":"l","values":[1,"a",{"b":[null]}],"end":"front"},
            {"op":"list_push","field":"l","values":[],"end":null},
            {"op":"list_pop","field":"l"},
            {"op":"list_pop","field":"l","count":3,"end":"back"},
            {"op":"list_peek","field":"l","count":null},
            {"op":"list_peek","field":"l","count":2},
            {"op":"set_add","field":"s","members":[1,"x"]},
            {"op":"set_remove","field":"s","members":[]},
            {"op":"set_contains","field":"s","members":["a"]}
        ]"#;
        let ours = parse_ops(parse(text)).unwrap();
        let theirs: Vec<FieldOp> = serde_json::from_value(parse(text)).unwrap();
        let direct: Vec<FieldOp> = serde_json::from_str(text).unwrap();
        let ours: Vec<_> = ours.iter().map(parts).collect();
        assert_eq!(ours, theirs.iter().map(parts).collect::<Vec<_>>());
        assert_eq!(ours, direct.iter().map(parts).collect::<Vec<_>>());
        assert!(ours[0].0.contains("by: None") && ours[1].0.contains("by: None"));
        assert!(ours[3].0.contains("end: Some(Front)") && ours[4].0.contains("end: None"));
        assert!(ours[6].0.contains("count: Some(3)") && ours[7].0.contains("count: None"));
    }

    /// `parse_ops` keeps numbers exactly; serde's tagged-enum path cannot.
    #[test]
    fn parse_ops_keeps_numbers_as_written() {
        let text = r#"[{"op":"list_push","field":"l","values":[-0,1e2,1.50,12345678901234567890123]},
                       {"op":"set_add","field":"s","members":[-12345678901234567890123,1E2]},
                       {"op":"increment","field":"n","by":1e2}]"#;
        let ops = parse_ops(parse(text)).unwrap();
        let shown: Vec<String> = ops
            .iter()
            .map(|op| Value::Array(parts(op).1).to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "[-0,1e2,1.50,12345678901234567890123]",
                "[-12345678901234567890123,1E2]",
                "[1e2]"
            ]
        );
        let mut target = Map::new();
        let results = apply_ops(&mut target, &ops).unwrap();
        assert_eq!(Value::Array(results).to_string(), "[4,2,1e2]");
        assert_eq!(
            Value::Object(target).to_string(),
            r#"{"l":[-0,1e2,1.50,12345678901234567890123],"s":[-12345678901234567890123,1E2],"n":1e2}"#
        );
        // What serde does with the same input, pinned so a change in serde is noticed.
        assert!(serde_json::from_value::<Vec<FieldOp>>(parse(text)).is_err());
        let normalised: Vec<FieldOp> = serde_json::from_value(parse(
            r#"[{"op":"list_push","field":"l","values":[-0,1e2]}]"#,
        ))
        .unwrap();
        assert_eq!(
            Value::Array(parts(&normalised[0]).1).to_string(),
            "[0,1e+2]"
        );
    }

    #[test]
    fn field_and_read_only() {
        let ops = ops_of(
            r#"[{"op":"increment","field":"a"},
                {"op":"list_push","field":"b","values":[]},
                {"op":"list_pop","field":"c"},
                {"op":"list_peek","field":"d"},
                {"op":"set_add","field":"e","members":[]},
                {"op":"set_remove","field":"f","members":[]},
                {"op":"set_contains","field":"g","members":[]}]"#,
        );
        let fields: Vec<&str> = ops.iter().map(FieldOp::field).collect();
        assert_eq!(fields, ["a", "b", "c", "d", "e", "f", "g"]);
        let read_only: Vec<bool> = ops.iter().map(FieldOp::is_read_only).collect();
        assert_eq!(read_only, [false, false, false, true, false, false, true]);
    }

    #[test]
    fn validation() {
        let cases: &[(&str, &str)] = &[
            ("[]", "ops must hold 1 to 100 operations"),
            (
                r#"[{"op":"increment","field":""}]"#,
                "op 0: field must not be empty",
            ),
            (
                r#"[{"op":"increment","field":"a"},{"op":"list_pop","field":"l","count":0}]"#,
                "op 1: count must be at least 1",
            ),
            (
                r#"[{"op":"list_peek","field":"l","count":0}]"#,
                "op 0: count must be at least 1",
            ),
            (
                r#"[{"op":"set_add","field":"s","members":["a",null]}]"#,
                "op 0: members[1] must be a string or a number",
            ),
            (
                r#"[{"op":"set_remove","field":"s","members":[true]}]"#,
                "op 0: members[0] must be a string or a number",
            ),
            (
                r#"[{"op":"set_contains","field":"s","members":[["a"]]}]"#,
                "op 0: members[0] must be a string or a number",
            ),
            (
                r#"[{"op":"set_add","field":"s","members":[{}]}]"#,
                "op 0: members[0] must be a string or a number",
            ),
            (
                r#"[{"op":"increment","field":"n","by":1e400}]"#,
                "op 0: by must be a finite number",
            ),
        ];
        for (ops, fragment) in cases {
            let ops = ops_of(ops);
            let Err(CoreError::InvalidRequest(msg)) = validate_ops(&ops) else {
                panic!("validate_ops accepted {ops:?}");
            };
            assert!(msg.contains(fragment), "{msg:?} lacks {fragment:?}");
            // apply_ops refuses them too, without touching the target.
            let mut target = Map::new();
            target.insert("s".to_owned(), Value::Array(Vec::new()));
            assert!(matches!(
                apply_ops(&mut target, &ops),
                Err(CoreError::InvalidRequest(_))
            ));
            assert_eq!(Value::Object(target).to_string(), r#"{"s":[]}"#);
        }
        let increment = r#"{"op":"increment","field":"n"}"#;
        let hundred = format!("[{}]", vec![increment; 100].join(","));
        assert!(validate_ops(&ops_of(&hundred)).is_ok());
        let too_many = format!("[{}]", vec![increment; 101].join(","));
        assert!(validate_ops(&ops_of(&too_many)).is_err());
        let mut target = Map::new();
        let results = apply_ops(&mut target, &ops_of(&hundred)).unwrap();
        assert_eq!(results.len(), 100);
        assert_eq!(Value::Object(target).to_string(), r#"{"n":100}"#);
    }

    #[test]
    fn messages_and_debug_hide_values() {
        let ops = ops_of(
            r#"[{"op":"list_push","field":"f","values":["s3cr3t"]},
                {"op":"set_add","field":"g","members":["s3cr3t"]},
                {"op":"increment","field":"h","by":31337},
                {"op":"list_pop","field":"l","count":2,"end":"back"}]"#,
        );
        let shown = format!("{ops:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("31337"),
            "{shown}"
        );
        assert!(
            shown.contains("list_push") && shown.contains("<1 values>"),
            "{shown}"
        );
        assert!(
            shown.contains("count: Some(2)") && shown.contains("Back"),
            "{shown}"
        );
        let mut target = Map::new();
        target.insert("h".to_owned(), Value::String("s3cr3t".to_owned()));
        let e = apply_ops(&mut target, &ops).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn number_order_is_exact() {
        let ascending = [
            "-1e400",
            "-12345678901234567890124",
            "-12345678901234567890123",
            "-2",
            "-1.5",
            "-1",
            "-0.001",
            "0",
            "1e-400",
            "0.001",
            "0.0011",
            "1",
            "1.0000000000000000001",
            "1.5",
            "2",
            "10",
            "99",
            "1e2",
            "100.5",
            "1000",
            "9007199254740992",
            "9007199254740993",
            "1e400",
        ];
        let numbers: Vec<Number> = ascending
            .iter()
            .map(|t| match parse(t) {
                Value::Number(n) => n,
                other => panic!("{other}"),
            })
            .collect();
        for (i, a) in numbers.iter().enumerate() {
            for (j, b) in numbers.iter().enumerate() {
                assert_eq!(compare_numbers(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
        let equal = [
            ("1", "1.0"),
            ("1", "1e0"),
            ("1", "0.1E1"),
            ("100", "1e+2"),
            ("-0", "0"),
            ("0", "0.000e-7"),
            ("-0.0", "0e10"),
            ("0.5", "5e-1"),
            ("-120", "-1.20e2"),
        ];
        for (a, b) in equal {
            let (Value::Number(x), Value::Number(y)) = (parse(a), parse(b)) else {
                panic!("not numbers");
            };
            assert_eq!(compare_numbers(&x, &y), Ordering::Equal, "{a} vs {b}");
        }
    }

    fn any_member() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            (-50i32..50).prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
            "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,5})?([eE][+-]?[0-9]{1,3})?".prop_map(|t| parse(&t)),
            "[a-c]{0,3}".prop_map(Value::String),
            any::<String>().prop_map(Value::String),
        ]
    }

    proptest! {
        #[test]
        fn set_add_yields_a_sorted_set_that_contains_every_member(
            batches in prop::collection::vec(prop::collection::vec(any_member(), 0..12), 1..5)
        ) {
            let mut target = Map::new();
            let mut all = Vec::new();
            let mut added = 0;
            for members in batches {
                let op = FieldOp::SetAdd { field: "s".to_owned(), members: members.clone() };
                let results = apply_ops(&mut target, &[op]).unwrap();
                added += results[0].as_u64().unwrap();
                all.extend(members);
            }
            let Some(Value::Array(set)) = target.get("s") else {
                panic!("no set");
            };
            // Sorted and without duplicates; every element was given; the counts add up.
            prop_assert!(is_set(set));
            prop_assert!(set.iter().all(|element| all.contains(element)));
            let distinct = set.len();
            prop_assert_eq!(added, distinct as u64);
            let contains = FieldOp::SetContains { field: "s".to_owned(), members: all.clone() };
            let results = apply_ops(&mut target, &[contains]).unwrap();
            prop_assert_eq!(&results[0], &Value::Array(vec![Value::Bool(true); all.len()]));
            // Removing everything leaves an empty set and counts each distinct member once.
            let remove = FieldOp::SetRemove { field: "s".to_owned(), members: all };
            let results = apply_ops(&mut target, &[remove]).unwrap();
            prop_assert_eq!(&results[0], &Value::from(distinct));
            prop_assert_eq!(target.get("s"), Some(&Value::Array(Vec::new())));
        }

        /// The exact order agrees with f64 wherever f64 can tell numbers apart.
        #[test]
        fn number_order_agrees_with_f64(a in any::<f64>(), b in any::<f64>()) {
            prop_assume!(a.is_finite() && b.is_finite());
            let (Some(x), Some(y)) = (Number::from_f64(a), Number::from_f64(b)) else {
                panic!("finite");
            };
            prop_assert_eq!(Some(compare_numbers(&x, &y)), a.partial_cmp(&b));
        }
    }
}
