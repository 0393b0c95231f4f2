//! The Grafana dashboards in docs/grafana are valid JSON, and every measurement, field and tag
//! their InfluxQL queries use is documented in docs/schema.md (which the gateway suite keeps
//! in step with what is written).

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs");

/// Every `query` string in a JSON tree.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        // a data source variable's query is a plugin name, not InfluxQL
        serde_json::Value::Object(m)
            if m.get("type").and_then(|t| t.as_str()) == Some("datasource") => {}
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("query", serde_json::Value::String(q)) => out.push(q.clone()),
                    _ => queries(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| queries(x, out)),
        _ => {}
    }
}

/// The double-quoted identifiers of a piece of InfluxQL, with whether each follows `AS`.
fn idents(s: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('"') {
        let before = rest[..i].trim_end();
        let after = &rest[i + 1..];
        let Some(j) = after.find('"') else { break };
        out.push((after[..j].to_owned(), before.ends_with("AS")));
        rest = &after[j + 1..];
    }
    out
}

fn schema_row<'a>(schema: &'a str, measurement: &str) -> Option<&'a str> {
    let head = format!("| `{measurement}` |");
    schema.lines().find(|l| l.starts_with(&head))
}

#[test]
fn dashboards_are_valid_and_query_only_documented_names() {
    let schema = std::fs::read_to_string(format!("{DOCS}/schema.md")).expect("docs/schema.md");
    let mut checked = 0;
    for entry in std::fs::read_dir(format!("{DOCS}/grafana")).expect("docs/grafana") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read dashboard");
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
        assert!(v["panels"].as_array().is_some_and(|p| !p.is_empty()));
        let mut qs = Vec::new();
        queries(&v, &mut qs);
        assert!(!qs.is_empty(), "{}: no queries", path.display());
        for q in &qs {
            let from = q.find(" FROM ").unwrap_or_else(|| panic!("no FROM in {q}"));
            let (select, tail) = q.split_at(from);
            let measurement = idents(tail)
                .first()
                .map(|(m, _)| m.clone())
                .unwrap_or_else(|| panic!("no measurement in {q}"));
            let row = schema_row(&schema, &measurement).unwrap_or_else(|| {
                panic!("measurement {measurement} of {q} is not in docs/schema.md")
            });
            for (field, alias) in idents(select) {
                if !alias {
                    assert!(
                        row.contains(&format!("`{field}`")),
                        "field {field} of {measurement} ({q}) is not in docs/schema.md"
                    );
                }
            }
            // tags: in WHERE and GROUP BY (the first identifier of the tail is the measurement)
            for (tag, _) in idents(tail).into_iter().skip(1) {
                assert!(
                    schema.contains(&format!("`{tag}`")),
                    "tag or field {tag} of {q} is not in docs/schema.md"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} queries checked");
}

#[test]
fn the_checker_catches_undocumented_names() {
    let schema = "| `mem` | | `used_percent` |\n";
    let row = schema_row(schema, "mem").expect("row");
    assert!(row.contains("`used_percent`"));
    assert!(!row.contains("`used_pct`"));
    assert!(schema_row(schema, "memory").is_none());
    assert_eq!(
        idents(r#"SELECT last("state") AS "s""#),
        [("state".to_owned(), false), ("s".to_owned(), true)]
    );
}
