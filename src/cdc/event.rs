//! What a captured change looks like: one [`Group`] per log index that changed rows, holding its
//! [`Event`]s in the order SQLite made them, and the JSON rqlite's consumers read (docs/API.md
//! §16). A group is rendered to JSON once, when it is captured; the queue keeps that text and a
//! batch is the texts joined inside the envelope.

use serde::Serialize;

use crate::store::command::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Op {
    Insert,
    Update,
    Delete,
}

/// One changed row.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub op: Op,
    pub table: String,
    /// The rowid before the change (UPDATE, DELETE).
    pub old_row_id: Option<i64>,
    /// The rowid after the change (INSERT, UPDATE).
    pub new_row_id: Option<i64>,
    /// Column values before and after (`None` with `row_ids_only`, or where the op has none).
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
    /// The table's column names when the change was made (set once the statement finished).
    pub columns: Option<std::sync::Arc<[String]>>,
}

/// The changes of one log entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub index: u64,
    /// When the leader proposed the entry (Unix nanoseconds): the same on every node.
    pub commit_timestamp: i64,
    pub events: Vec<Event>,
}

impl Group {
    /// `{"index":…,"commit_timestamp":…,"events":[…]}`, keys in that order.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct G<'a> {
            index: u64,
            commit_timestamp: i64,
            events: Vec<E<'a>>,
        }
        #[derive(Serialize)]
        struct E<'a> {
            op: Op,
            table: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            new_row_id: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            old_row_id: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            before: Option<Row<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            after: Option<Row<'a>>,
        }
        let events = self
            .events
            .iter()
            .map(|e| E {
                op: e.op,
                table: &e.table,
                new_row_id: e.new_row_id,
                old_row_id: e.old_row_id,
                before: e.before.as_deref().map(|v| Row(e.columns.as_deref(), v)),
                after: e.after.as_deref().map(|v| Row(e.columns.as_deref(), v)),
            })
            .collect();
        let g = G { index: self.index, commit_timestamp: self.commit_timestamp, events };
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_string(&g).unwrap_or_default()
    }
}

/// Column name → value, in the table's column order; a column whose name is unknown is named
/// by its position.
struct Row<'a>(Option<&'a [String]>, &'a [Value]);

impl Serialize for Row<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.1.len()))?;
        for (i, v) in self.1.iter().enumerate() {
            match self.0.and_then(|c| c.get(i)) {
                Some(name) => m.serialize_entry(name, &json_value(v))?,
                None => m.serialize_entry(&format!("column{i}"), &json_value(v))?,
            }
        }
        m.end()
    }
}

/// A value as rqlite's JSON shows it: BLOBs in base64, non-finite reals as null.
fn json_value(v: &Value) -> serde_json::Value {
    use base64::Engine;
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => (*i).into(),
        Value::Real(f) => serde_json::Number::from_f64(*f).map(Into::into).unwrap_or(serde_json::Value::Null),
        Value::Bool(b) => (*b).into(),
        Value::Text(s) => s.clone().into(),
        Value::Blob(b) => base64::engine::general_purpose::STANDARD.encode(b).into(),
    }
}

/// The body of one POST: `{"service_id":…,"node_id":…,"payload":[group, …]}`, from groups
/// already rendered to JSON.
pub fn envelope(service_id: Option<&str>, node_id: &str, groups: &[&str]) -> String {
    let mut out = String::with_capacity(64 + groups.iter().map(|g| g.len() + 1).sum::<usize>());
    out.push('{');
    if let Some(s) = service_id {
        out.push_str("\"service_id\":");
        out.push_str(&serde_json::Value::from(s).to_string());
        out.push(',');
    }
    out.push_str("\"node_id\":");
    out.push_str(&serde_json::Value::from(node_id).to_string());
    out.push_str(",\"payload\":[");
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(g);
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_and_its_envelope_are_rqlite_json() {
        let g = Group {
            index: 7,
            commit_timestamp: 1_700_000_000_000_000_000,
            events: vec![
                Event {
                    op: Op::Update,
                    table: "t".into(),
                    old_row_id: Some(1),
                    new_row_id: Some(1),
                    before: Some(vec![Value::Integer(1), Value::Text("a".into())]),
                    after: Some(vec![Value::Integer(1), Value::Blob(vec![1, 2])]),
                    columns: Some(vec!["id".to_string(), "v".to_string()].into()),
                },
                Event {
                    op: Op::Delete,
                    table: "t".into(),
                    old_row_id: Some(2),
                    new_row_id: None,
                    before: None,
                    after: None,
                    columns: None,
                },
            ],
        };
        let json = g.to_json();
        assert!(json.starts_with(r#"{"index":7,"commit_timestamp":"#), "{json}");
        assert!(json.contains(r#"{"op":"UPDATE","table":"t","new_row_id":1,"old_row_id":1,"before":{"id":1,"v":"a"}"#));
        let text = envelope(Some("svc"), "n1", &[&json]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["service_id"], "svc");
        assert_eq!(v["node_id"], "n1");
        let p = &v["payload"][0];
        assert_eq!(p["index"], 7);
        assert_eq!(p["commit_timestamp"], 1_700_000_000_000_000_000i64);
        assert_eq!(p["events"][0]["op"], "UPDATE");
        assert_eq!(p["events"][0]["before"], serde_json::json!({"id": 1, "v": "a"}));
        assert_eq!(p["events"][0]["after"], serde_json::json!({"id": 1, "v": "AQI="}));
        assert_eq!(p["events"][1], serde_json::json!({"op": "DELETE", "table": "t", "old_row_id": 2}));
        let none: serde_json::Value = serde_json::from_str(&envelope(None, "n1", &[])).unwrap();
        assert_eq!(none, serde_json::json!({"node_id": "n1", "payload": []}));
    }
}
