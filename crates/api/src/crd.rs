//! The CustomResourceDefinitions (`apiextensions.k8s.io/v1`) of both kinds,
//! generated from the Rust types; `deploy/crds/` holds them, written by the
//! `crdgen` binary and checked for staleness by a test.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::stored::{to_yaml, Error};
use crate::{BehaviorProfile, SecurityAlert};

/// The command that regenerates `deploy/crds/`.
pub const CRDGEN_COMMAND: &str = "cargo run --release -p kestrel-api --bin crdgen";

/// Both definitions.
///
/// Defaults that hold an empty string (`message: ""`, or an object default
/// with an empty `reason`) are left out of the schema: the Kubernetes 1.20
/// API server refuses the whole definition for them ("default: Invalid
/// value: \"null\": in body must be of type string", measured with
/// `k8s-testenv`). Nothing depends on them: a missing field reads as its
/// serde default.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        without_empty_string_defaults(BehaviorProfile::crd()),
        without_empty_string_defaults(SecurityAlert::crd()),
    ]
}

fn without_empty_string_defaults(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    use serde_json::Value;
    fn holds_empty_string(v: &Value) -> bool {
        match v {
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.iter().any(holds_empty_string),
            Value::Object(o) => o.values().any(holds_empty_string),
            _ => false,
        }
    }
    fn strip(v: &mut Value) {
        match v {
            Value::Object(o) => {
                if o.get("default").is_some_and(holds_empty_string) {
                    o.remove("default");
                }
                o.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let Ok(mut v) = serde_json::to_value(&crd) else {
        return crd;
    };
    if let Some(versions) = v.pointer_mut("/spec/versions") {
        strip(versions);
    }
    serde_json::from_value(v).unwrap_or(crd)
}

/// Each definition as the YAML file `deploy/crds/<plural>.yaml` holds:
/// `(file name, contents)`.
pub fn crd_files() -> Result<Vec<(String, String)>, Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let file = format!("{}.yaml", crd.spec.names.plural);
            let yaml = to_yaml(&crd)?;
            Ok((
                file,
                format!(
                    "# Generated from the Rust types in crates/api: do not edit.\n\
                     # Regenerate with `make crds` ({CRDGEN_COMMAND}).\n{yaml}"
                ),
            ))
        })
        .collect()
}

/// Checks objects against the generated schemas the way the API server would.
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;
    use serde_json::{Map, Value};

    /// The `openAPIV3Schema` of a definition.
    pub(crate) fn schema(crd: &CustomResourceDefinition) -> Value {
        let v = &crd.spec.versions[0];
        serde_json::to_value(
            v.schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap()
    }

    /// Checks `v` against a CRD schema node the way the API server would
    /// (types, required, enums, lengths, ranges); also flags fields the
    /// schema does not know (the server would prune them silently).
    pub(crate) fn validate(
        schema: &Map<String, Value>,
        v: &Value,
        path: &str,
        errors: &mut Vec<String>,
    ) {
        let mut err = |m: String| errors.push(format!("{path}: {m}"));
        if v.is_null() {
            if schema.get("nullable") != Some(&Value::Bool(true)) {
                err("null but not nullable".into());
            }
            return;
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            if !values.contains(v) {
                err(format!("{v} not in {values:?}"));
            }
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("string") => match v.as_str() {
                Some(s) => {
                    let max = schema.get("maxLength").and_then(Value::as_u64);
                    if max.is_some_and(|m| s.chars().count() as u64 > m) {
                        err(format!("longer than {max:?}"));
                    }
                }
                None => err(format!("{v} is not a string")),
            },
            Some("integer") if !(v.is_i64() || v.is_u64()) => err(format!("{v} not an integer")),
            Some("integer") if v.as_i64().is_none() => err(format!("{v} above int64")),
            Some("number") if !v.is_number() => err(format!("{v} not a number")),
            Some("boolean") if !v.is_boolean() => err(format!("{v} not a boolean")),
            Some("integer" | "number") => {
                let x = v.as_f64().unwrap_or(0.0);
                let min = schema.get("minimum").and_then(Value::as_f64);
                let max = schema.get("maximum").and_then(Value::as_f64);
                if min.is_some_and(|m| x < m) || max.is_some_and(|m| x > m) {
                    err(format!("{x} outside {min:?}..={max:?}"));
                }
            }
            Some("array") => match v.as_array() {
                Some(items) => {
                    let max = schema.get("maxItems").and_then(Value::as_u64);
                    if max.is_some_and(|m| items.len() as u64 > m) {
                        err(format!("more than {max:?} items"));
                    }
                    if let Some(item) = schema.get("items").and_then(Value::as_object) {
                        for (i, x) in items.iter().enumerate() {
                            validate(item, x, &format!("{path}[{i}]"), errors);
                        }
                    }
                }
                None => err(format!("{v} is not an array")),
            },
            Some("object") | None => {
                let Some(obj) = v.as_object() else {
                    return err(format!("{v} is not an object"));
                };
                let empty = Map::new();
                let props = schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .unwrap_or(&empty);
                for r in schema
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if !obj.contains_key(r.as_str().unwrap_or("")) {
                        errors.push(format!("{path}: missing {r}"));
                    }
                }
                for (k, x) in obj {
                    let at = format!("{path}.{k}");
                    if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
                        continue;
                    }
                    match props.get(k).and_then(Value::as_object) {
                        Some(s) => validate(s, x, &at, errors),
                        None => errors.push(format!("{at}: not in the schema")),
                    }
                }
            }
            _ => {}
        }
    }

    pub(crate) fn check<T: serde::Serialize>(crd: &CustomResourceDefinition, object: &T) {
        let s = schema(crd);
        let v = serde_json::to_value(object).unwrap();
        let mut errors = Vec::new();
        validate(s.as_object().unwrap(), &v, "", &mut errors);
        assert!(errors.is_empty(), "{errors:#?}\n{v:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::conformance::{check, schema, validate};
    use super::*;
    use crate::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceColumnDefinition;
    use serde_json::{Map, Value};

    /// Calls `f` on every schema node below `v` with its path.
    fn walk(v: &Value, path: &str, f: &mut impl FnMut(&str, &Map<String, Value>)) {
        let Some(o) = v.as_object() else { return };
        f(path, o);
        if let Some(props) = o.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                walk(p, &format!("{path}.{k}"), f);
            }
        }
        if let Some(items) = o.get("items") {
            walk(items, &format!("{path}[]"), f);
        }
        if let Some(extra) = o.get("additionalProperties") {
            walk(extra, &format!("{path}{{}}"), f);
        }
    }

    fn every_node(f: &mut impl FnMut(&str, &str, &Map<String, Value>)) {
        for crd in crds() {
            let kind = crd.spec.names.kind.clone();
            walk(&schema(&crd), "", &mut |p, o| f(&kind, p, o));
        }
    }

    #[test]
    fn every_string_has_a_max_length_and_every_list_max_items() {
        let mut bad = Vec::new();
        let (mut strings, mut lists) = (0, 0);
        every_node(
            &mut |kind, path, o| match o.get("type").and_then(Value::as_str) {
                Some("string") => {
                    strings += 1;
                    if !o.contains_key("maxLength") && !o.contains_key("enum") {
                        bad.push(format!("{kind}{path}: string without maxLength"));
                    }
                }
                Some("array") => {
                    lists += 1;
                    if !o.contains_key("maxItems") {
                        bad.push(format!("{kind}{path}: array without maxItems"));
                    }
                }
                _ => {}
            },
        );
        assert!(bad.is_empty(), "{bad:#?}");
        assert!(
            strings > 50 && lists > 20,
            "{strings} strings, {lists} lists"
        );
    }

    #[test]
    fn empty_strings_in_list_items_are_left_out_and_read_back_empty() {
        let body = ProfileBody {
            processes: vec![ProcessEntry {
                image: String::new(),
                parent: "sh".into(),
                exe: "date".into(),
                arguments: vec![ArgumentSpec {
                    args: String::new(),
                    min_similarity: None,
                }],
            }],
            ..ProfileBody::default()
        };
        let v = serde_json::to_value(&body).unwrap();
        let entry = &v["processes"][0];
        assert!(entry.get("image").is_none(), "{v}");
        assert!(entry["arguments"][0].get("args").is_none(), "{v}");
        let back: ProfileBody = serde_json::from_value(v).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn no_default_holds_an_empty_string() {
        // Kubernetes 1.20 refuses such a definition outright
        every_node(&mut |kind, path, node| {
            if let Some(d) = node.get("default") {
                let text = d.to_string();
                assert!(!text.contains("\"\""), "{kind} {path}: default {text}");
            }
        });
    }

    #[test]
    fn the_schemas_are_structural_and_carry_no_cel() {
        let mut bad = Vec::new();
        every_node(&mut |kind, path, o| {
            for key in [
                "x-kubernetes-validations",
                "oneOf",
                "anyOf",
                "allOf",
                "not",
                "$ref",
                "const",
            ] {
                if o.contains_key(key) {
                    bad.push(format!("{kind}{path}: {key}"));
                }
            }
            if !path.is_empty() && !o.contains_key("type") {
                bad.push(format!("{kind}{path}: no type"));
            }
        });
        assert!(bad.is_empty(), "{bad:#?}");
        for (_, yaml) in crd_files().unwrap() {
            assert!(!yaml.contains("x-kubernetes-validations"));
        }
    }

    #[test]
    fn enum_values_are_pascal_case() {
        let mut seen = 0;
        let mut bad = Vec::new();
        every_node(&mut |kind, path, o| {
            for v in o
                .get("enum")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                seen += 1;
                let s = v.as_str().unwrap_or("");
                let pascal = s.starts_with(|c: char| c.is_ascii_uppercase())
                    && s.chars().all(|c| c.is_ascii_alphanumeric());
                if !pascal {
                    bad.push(format!("{kind}{path}: {v}"));
                }
            }
        });
        assert!(bad.is_empty(), "{bad:#?}");
        assert!(seen > 30, "{seen}");
    }

    #[test]
    fn names_scope_categories_and_the_status_subresource() {
        let [bp, sa] = <[_; 2]>::try_from(crds()).unwrap();
        for (crd, plural, short) in [
            (&bp, "behaviorprofiles", "bp"),
            (&sa, "securityalerts", "salert"),
        ] {
            assert_eq!(
                crd.metadata.name.as_deref(),
                Some(&*format!("{plural}.kestrel.dev"))
            );
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(crd.spec.names.plural, plural);
            assert_eq!(crd.spec.names.short_names, Some(vec![short.to_string()]));
            assert_eq!(crd.spec.names.categories, Some(vec!["kestrel".to_string()]));
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, VERSION);
            assert!(v.served && v.storage);
            assert!(v.subresources.as_ref().unwrap().status.is_some());
        }
        use kube::Resource;
        assert_eq!(BehaviorProfile::api_version(&()), API_VERSION);
        assert_eq!(SecurityAlert::api_version(&()), API_VERSION);
        assert_eq!(BehaviorProfile::kind(&()), BEHAVIOR_PROFILE_KIND);
        assert_eq!(SecurityAlert::kind(&()), SECURITY_ALERT_KIND);
        assert_eq!(format!("{GROUP}/{VERSION}"), API_VERSION);
    }

    fn columns(crd: &CustomResourceDefinition) -> Vec<(String, String, String)> {
        crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c: &CustomResourceColumnDefinition| {
                (c.name.clone(), c.type_.clone(), c.json_path.clone())
            })
            .collect()
    }

    #[test]
    fn printer_columns_show_what_people_ask_first() {
        let [bp, sa] = <[_; 2]>::try_from(crds()).unwrap();
        let names = |c: Vec<(String, String, String)>| -> Vec<String> {
            c.into_iter().map(|(n, _, _)| n).collect()
        };
        assert_eq!(
            names(columns(&bp)),
            [
                "Workload",
                "Mode",
                "Phase",
                "Processes",
                "Files",
                "Peers",
                "Exemplars",
                "Converged",
                "Age"
            ]
        );
        assert_eq!(
            names(columns(&sa)),
            ["Severity", "Score", "Workload", "Pod", "Count", "State", "Age"]
        );
        // Every column's path exists in the objects the builders make.
        let objects = [
            (
                bp,
                serde_json::to_value(BehaviorProfile::test().detecting().build()).unwrap(),
            ),
            (
                sa,
                serde_json::to_value(SecurityAlert::test().build()).unwrap(),
            ),
        ];
        for (crd, mut obj) in objects {
            obj["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z".into();
            for (name, _, path) in columns(&crd) {
                assert!(
                    resolve(&obj, &path).is_some(),
                    "{name}: {path} not in {obj}"
                );
            }
        }
    }

    /// Follows a printer column's path (`.a.b`, `.a[?(@.type=="X")].b`).
    fn resolve<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
        let mut cur = v;
        let path = path.replace("@.type", "@type");
        for part in path.trim_start_matches('.').split('.') {
            if let Some((field, filter)) = part.split_once("[?(@type==\"") {
                let want = filter.trim_end_matches("\")]");
                cur = cur
                    .get(field)?
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == want)?;
            } else {
                cur = cur.get(part)?;
            }
        }
        Some(cur)
    }

    #[test]
    fn objects_as_serialised_pass_their_own_schema() {
        let [bp, sa] = <[_; 2]>::try_from(crds()).unwrap();
        for p in [
            BehaviorProfile::test().build(),
            BehaviorProfile::test().learning().build(),
            BehaviorProfile::test().detecting().build(),
            BehaviorProfile::test().promoted().build(),
            BehaviorProfile::test().promoted().detecting().build(),
        ] {
            check(&bp, &p);
        }
        for s in [Severity::Info, Severity::Critical] {
            check(&sa, &SecurityAlert::test().severity(s).build());
        }
        let mut a = SecurityAlert::test().build();
        a.spec.evidence.signals = vec![
            Signal::UnusualArguments {
                best_similarity: 0.3,
                nearest_exemplar: Some("-jar app.jar".into()),
                difference: Some("new flags -o".into()),
            },
            Signal::UnknownFile {
                path: "/etc/shadow".into(),
                access: FileAccess::Read,
                raw_path: None,
            },
        ];
        a.spec.llm.verdict = Some(Verdict::Malicious);
        check(&sa, &a);
    }

    #[test]
    fn the_validator_catches_what_the_server_would_refuse() {
        let [bp, _] = <[_; 2]>::try_from(crds()).unwrap();
        let mut p = BehaviorProfile::test().learning().build();
        let body = p.status.as_mut().unwrap().learned.as_mut().unwrap();
        body.processes[0].exe = "x".repeat(2000);
        let s = schema(&bp);
        let mut errors = Vec::new();
        validate(
            s.as_object().unwrap(),
            &serde_json::to_value(&p).unwrap(),
            "",
            &mut errors,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("status.learned.processes[0].exe"),
            "{errors:?}"
        );
    }
}
