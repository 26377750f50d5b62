//! An agency's declarative mapping of the canonical JSON (`[agencies.adapter.mapping.<kind>]`),
//! applied in this order:
//!
//! 1. `flatten`: each listed object's fields are lifted into its parent as
//!    `<name>_<field>` (one level; list the result again to go deeper), the object removed;
//! 2. `rename`: each source path moves to its target path, creating the target's
//!    intermediate objects (which is how nesting works). All sources are taken out first
//!    (deepest first), then placed (shallowest first), so renames do not depend on each
//!    other's order and two fields can swap. A missing source is skipped;
//! 3. `drop`: listed paths are removed (missing ones ignored);
//! 4. `constants`: each path is set to its value, creating intermediate objects.
//!
//! Paths are dotted object keys ("subject.identifier.value"). Placing a value below a
//! field that holds something other than an object is an error rather than a silent loss.

use serde_json::{Map, Value};

use super::RestMapping;

/// Reshapes `doc` as `mapping` says.
pub fn apply(mapping: &RestMapping, mut doc: Map<String, Value>) -> Result<Value, String> {
    for path in &mapping.flatten {
        flatten(&mut doc, path);
    }

    let mut moves: Vec<(&String, &String)> = mapping.rename.iter().collect();
    moves.sort_by_key(|(from, _)| std::cmp::Reverse(depth(from)));
    let mut taken: Vec<(&String, Value)> = moves
        .into_iter()
        .filter_map(|(from, to)| take(&mut doc, from).map(|v| (to, v)))
        .collect();
    taken.sort_by_key(|(to, _)| depth(to));
    for (to, value) in taken {
        set(&mut doc, to, value).map_err(|e| format!("rename to {to:?}: {e}"))?;
    }

    for path in &mapping.drop {
        take(&mut doc, path);
    }
    for (path, value) in &mapping.constants {
        set(&mut doc, path, value.clone()).map_err(|e| format!("constant {path:?}: {e}"))?;
    }
    Ok(Value::Object(doc))
}

fn depth(path: &str) -> usize {
    path.split('.').count()
}

/// The object holding the last segment of `path`, if every parent exists and is an object.
fn parent_mut<'a>(
    doc: &'a mut Map<String, Value>,
    path: &'a str,
) -> Option<(&'a mut Map<String, Value>, &'a str)> {
    let mut segments: Vec<&str> = path.split('.').collect();
    let last = segments.pop()?;
    let mut cur = doc;
    for s in segments {
        cur = cur.get_mut(s)?.as_object_mut()?;
    }
    Some((cur, last))
}

/// Removes and returns the value at `path`.
fn take(doc: &mut Map<String, Value>, path: &str) -> Option<Value> {
    let (parent, last) = parent_mut(doc, path)?;
    parent.remove(last)
}

/// Sets `path` to `value`, creating missing intermediate objects.
fn set(doc: &mut Map<String, Value>, path: &str, value: Value) -> Result<(), String> {
    let mut segments: Vec<&str> = path.split('.').collect();
    let last = segments.pop().unwrap_or(path);
    let mut cur = doc;
    let mut walked = String::new();
    for s in segments {
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(s);
        let next = cur
            .entry(s.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if next.is_null() {
            *next = Value::Object(Map::new());
        }
        cur = next
            .as_object_mut()
            .ok_or_else(|| format!("{walked:?} holds a value that is not an object"))?;
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

/// Lifts the fields of the object at `path` into its parent as `<name>_<field>`.
fn flatten(doc: &mut Map<String, Value>, path: &str) {
    let Some((parent, last)) = parent_mut(doc, path) else {
        return;
    };
    if !parent.get(last).is_some_and(Value::is_object) {
        return;
    }
    if let Some(Value::Object(fields)) = parent.remove(last) {
        for (k, v) in fields {
            parent.insert(format!("{last}_{k}"), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Map<String, Value> {
        let Value::Object(m) = json!({
            "id": "01REF",
            "summary": "Family of five",
            "subject": {
                "full_name": "Mariam",
                "identifier": { "type": "EMIRATES_ID", "value": "784-1990-1234567-6" },
            },
            "consent": { "reference": "C-42", "scope": "social" },
            "attachments": [{ "document_id": "sha256:ab", "title": "t" }],
            "due_at": null,
        }) else {
            unreachable!()
        };
        m
    }

    fn mapping(toml_text: &str) -> RestMapping {
        toml::from_str(toml_text).expect("mapping parses")
    }

    #[test]
    fn rename_moves_into_a_new_nest_and_removes_the_source() {
        let m = mapping(
            r#"rename = { "subject.full_name" = "person.name", "subject.identifier.value" = "person.eid", "id" = "case.ref" }"#,
        );
        let out = apply(&m, doc()).unwrap();
        assert_eq!(
            out["person"],
            json!({ "name": "Mariam", "eid": "784-1990-1234567-6" })
        );
        assert_eq!(out["case"], json!({ "ref": "01REF" }));
        assert_eq!(
            out["subject"],
            json!({ "identifier": { "type": "EMIRATES_ID" } })
        );
        assert!(out.get("id").is_none());
    }

    #[test]
    fn rename_of_a_missing_path_is_a_no_op() {
        let m = mapping(r#"rename = { "nothing.here" = "x.y", "subject.nope" = "z" }"#);
        let before = Value::Object(doc());
        assert_eq!(apply(&m, doc()).unwrap(), before);
    }

    #[test]
    fn renames_are_simultaneous_so_fields_can_swap_and_nest_under_themselves() {
        let m = mapping(
            r#"rename = { "id" = "summary", "summary" = "id", "subject" = "subject.person" }"#,
        );
        let out = apply(&m, doc()).unwrap();
        assert_eq!(out["id"], "Family of five");
        assert_eq!(out["summary"], "01REF");
        assert_eq!(out["subject"]["person"]["full_name"], "Mariam");
    }

    #[test]
    fn flatten_lifts_fields_into_the_parent() {
        let m = mapping(r#"flatten = ["consent", "subject.identifier", "summary", "missing"]"#);
        let out = apply(&m, doc()).unwrap();
        assert_eq!(out["consent_reference"], "C-42");
        assert_eq!(out["consent_scope"], "social");
        assert!(out.get("consent").is_none());
        assert_eq!(out["subject"]["identifier_value"], "784-1990-1234567-6");
        assert_eq!(out["subject"]["identifier_type"], "EMIRATES_ID");
        assert_eq!(
            out["summary"], "Family of five",
            "a non-object is left alone"
        );
    }

    #[test]
    fn flatten_comes_before_rename_which_comes_before_drop_and_constants() {
        let m = mapping(
            r#"
            flatten = ["consent"]
            rename = { "consent_reference" = "meta.consent" }
            drop = ["attachments", "meta.consent", "due_at", "not.there"]
            constants = { "source" = "jisr", "schema.version" = 2, "meta.consent" = "fixed" }
            "#,
        );
        let out = apply(&m, doc()).unwrap();
        assert_eq!(out["meta"], json!({ "consent": "fixed" }));
        assert!(out.get("attachments").is_none() && out.get("due_at").is_none());
        assert_eq!(out["source"], "jisr");
        assert_eq!(out["schema"], json!({ "version": 2 }));
        assert_eq!(out["consent_scope"], "social");
    }

    #[test]
    fn constants_overwrite_and_nest_and_null_parents_become_objects() {
        let m = mapping(r#"constants = { "id" = "x", "due_at.kind" = "none", "a.b.c" = true }"#);
        let out = apply(&m, doc()).unwrap();
        assert_eq!(out["id"], "x");
        assert_eq!(out["due_at"], json!({ "kind": "none" }));
        assert_eq!(out["a"], json!({ "b": { "c": true } }));
    }

    #[test]
    fn placing_below_a_scalar_is_an_error_not_a_loss() {
        let m = mapping(r#"constants = { "summary.text" = "x" }"#);
        let err = apply(&m, doc()).unwrap_err();
        assert!(err.contains("summary"), "{err}");
        let m = mapping(r#"rename = { "id" = "summary.id" }"#);
        assert!(apply(&m, doc()).is_err());
    }
}
