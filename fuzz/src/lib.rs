//! What the fuzz targets share: the sample config's registry and directory (built once),
//! a check that a violation names a field of the request (against the compiled proto
//! descriptors), and bounded JSON values and mappings built from fuzz input.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use jisr::api::error::ApiError;
use jisr::config::{Config, RestMapping};
use jisr::directory::Directory;
use jisr::tls::Registry;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value};

/// The calling agency of every fuzzed request (registered in the sample config).
pub const CALLER: &str = "social-services";

/// A fixed "now" (2026-09-21T...Z), so a crash reproduces whatever the clock says.
pub const NOW_MS: i64 = 1_790_000_000_000;

pub struct Fixture {
    pub registry: Registry,
    pub directory: Directory,
}

/// The registry and directory of config/jisr.toml.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = Config::parse(
            Path::new("config/jisr.toml"),
            include_str!("../../config/jisr.toml"),
            Vec::new(),
        )
        .expect("sample config parses");
        Fixture {
            registry: Registry::of(&config),
            directory: Directory::from_config(&config).expect("sample directory"),
        }
    })
}

/// Every message of the contract by its full name (".jisr.v1.Referral").
fn messages() -> &'static HashMap<String, DescriptorProto> {
    static MESSAGES: OnceLock<HashMap<String, DescriptorProto>> = OnceLock::new();
    MESSAGES.get_or_init(|| {
        fn add(out: &mut HashMap<String, DescriptorProto>, scope: &str, m: &DescriptorProto) {
            let name = format!("{scope}.{}", m.name());
            for nested in &m.nested_type {
                add(out, &name, nested);
            }
            out.insert(name, m.clone());
        }
        let set = FileDescriptorSet::decode(jisr::pb::FILE_DESCRIPTOR_SET).expect("descriptors");
        let mut out = HashMap::new();
        for file in &set.file {
            let scope = format!(".{}", file.package());
            for m in &file.message_type {
                add(&mut out, &scope, m);
            }
        }
        out
    })
}

/// Whether `path` ("referral.attachments[2].document_id") names a field of `message`
/// (".jisr.v1.SubmitReferralRequest"): every segment a field (the last may be a oneof),
/// indices only on repeated fields and below `len(path before the index)`.
pub fn names_a_field(message: &str, path: &str, len: &dyn Fn(&str) -> Option<usize>) -> bool {
    let all = messages();
    let mut current = all.get(message);
    let mut walked = String::new();
    let segments: Vec<&str> = path.split('.').collect();
    for (n, segment) in segments.iter().enumerate() {
        let Some(m) = current else { return false };
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => {
                match rest.strip_suffix(']').and_then(|i| i.parse::<usize>().ok()) {
                    Some(i) => (name, Some(i)),
                    None => return false,
                }
            }
            None => (*segment, None),
        };
        let last = n + 1 == segments.len();
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(name);
        let Some(field) = m.field.iter().find(|f| f.name() == name) else {
            return last && index.is_none() && m.oneof_decl.iter().any(|o| o.name() == name);
        };
        if let Some(i) = index {
            if field.label() != Label::Repeated || len(&walked).is_none_or(|l| i >= l) {
                return false;
            }
            walked.push_str(&format!("[{i}]"));
        }
        current = if field.r#type() == Type::Message {
            all.get(field.type_name())
        } else {
            None
        };
        if !last && current.is_none() {
            return false;
        }
    }
    true
}

/// Asserts a validation error is INVALID_ARGUMENT naming only fields of `message`.
pub fn assert_violations(
    result: std::result::Result<(), &ApiError>,
    message: &str,
    len: &dyn Fn(&str) -> Option<usize>,
) {
    let Err(e) = result else { return };
    let ApiError::Invalid(violations) = e else {
        panic!("validation failed with something other than violations: {e:?}");
    };
    assert!(!violations.is_empty(), "an error without violations");
    for v in violations {
        assert!(
            names_a_field(message, &v.field, len),
            "violation {:?} ({}) names no field of {message}",
            v.field,
            v.description
        );
        assert!(
            !v.description.is_empty(),
            "violation {:?} says nothing",
            v.field
        );
    }
}

/// Keys likely to collide with each other and with the canonical JSON's, so mappings
/// hit present paths; now and then any string.
fn key(u: &mut Unstructured) -> Result<String> {
    const KEYS: &[&str] = &[
        "a",
        "b",
        "c",
        "a_b",
        "",
        "id",
        "subject",
        "identifier",
        "value",
        "consent",
        "reference",
        "attachments",
        "0",
        "due_at",
        "kind",
    ];
    if u.ratio(1, 8)? {
        u.arbitrary()
    } else {
        Ok(u.choose(KEYS)?.to_string())
    }
}

/// A dotted path of 1-4 keys, or now and then any string (empty segments included).
pub fn path(u: &mut Unstructured) -> Result<String> {
    if u.ratio(1, 10)? {
        return u.arbitrary();
    }
    let n = u.int_in_range(1..=4)?;
    let keys = (0..n).map(|_| key(u)).collect::<Result<Vec<_>>>()?;
    Ok(keys.join("."))
}

/// A JSON value nested at most `depth` deep.
pub fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let pick = if depth == 0 {
        u.int_in_range(0..=3)?
    } else {
        u.int_in_range(0..=5)?
    };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => serde_json::Number::from_f64(u.arbitrary()?).map_or_else(
            || Value::from(u.arbitrary::<i64>().unwrap_or(0)),
            Value::Number,
        ),
        3 => Value::String(u.arbitrary()?),
        4 => Value::Array(
            (0..u.int_in_range(0..=3)?)
                .map(|_| value(u, depth - 1))
                .collect::<Result<_>>()?,
        ),
        _ => Value::Object(object(u, depth - 1)?),
    })
}

/// A JSON object nested at most `depth` deep below it.
pub fn object(u: &mut Unstructured, depth: u32) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for _ in 0..u.int_in_range(0..=6)? {
        m.insert(key(u)?, value(u, depth)?);
    }
    Ok(m)
}

/// A mapping of a few renames, flattens, drops and constants over likely paths.
pub fn mapping(u: &mut Unstructured) -> Result<RestMapping> {
    let mut rename = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=4)? {
        rename.insert(path(u)?, path(u)?);
    }
    let mut constants = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=3)? {
        constants.insert(path(u)?, value(u, 2)?);
    }
    Ok(RestMapping {
        path: String::new(),
        rename,
        flatten: (0..u.int_in_range(0..=3)?)
            .map(|_| path(u))
            .collect::<Result<_>>()?,
        constants,
        drop: (0..u.int_in_range(0..=3)?)
            .map(|_| path(u))
            .collect::<Result<_>>()?,
    })
}
