//! Conversation state: a document of named fields, each with a reducer, a scope and a version.
//!
//! Nodes never mutate state; they return an [`Update`], and each field's [`Reducer`] folds the update
//! into the current value. Every reduction also yields a [`Patch`]: a reducer-independent record of
//! the change (the new value for `replace`-like fields, only the appended items for `append` and
//! `messages`). Checkpoints store patches, so the storage a step costs grows with what it changed,
//! not with the length of the conversation, and replaying patches needs no user code.

use crate::error::ReducerError;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a field's value lives and who shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Part of the conversation's checkpoints (the default).
    Conversation,
    /// Shared by every conversation of one customer; stored in the context store.
    Customer,
    /// Shared by every conversation of the assistant; stored in the context store.
    Assistant,
    /// Lives for one run only; never persisted.
    Temporary,
}

/// A user-defined reducer: `(current, update) -> new value`. It must be deterministic.
pub type CustomReduce = Arc<dyn Fn(&Value, Value) -> Result<Value, String> + Send + Sync>;

/// How an update is folded into a field.
#[derive(Clone)]
pub enum Reducer {
    /// The update replaces the value.
    Replace,
    /// The update (an item, or an array of items) is appended to an array.
    Append,
    /// Chat messages: append, or update in place when a message with the same `id` exists;
    /// `{"id": X, "$remove": true}` removes message X and `{"$remove_all": true}` clears the list.
    /// Messages without an `id` get one.
    Messages,
    /// Object keys are merged shallowly; a `null` value deletes the key.
    MergeMap,
    /// Numbers are added.
    Counter,
    /// A named user-defined reducer.
    Custom(&'static str, CustomReduce),
}

impl fmt::Debug for Reducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Replace => f.write_str("Replace"),
            Self::Append => f.write_str("Append"),
            Self::Messages => f.write_str("Messages"),
            Self::MergeMap => f.write_str("MergeMap"),
            Self::Counter => f.write_str("Counter"),
            Self::Custom(name, _) => write!(f, "Custom({name})"),
        }
    }
}

/// One field of the state schema.
#[derive(Debug, Clone)]
pub struct Field {
    pub(crate) name: Cow<'static, str>,
    pub(crate) reducer: Reducer,
    pub(crate) scope: Scope,
    pub(crate) default: Value,
}

impl Field {
    /// A conversation-scoped field with the `replace` reducer and a `null` default.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self { name: name.into(), reducer: Reducer::Replace, scope: Scope::Conversation, default: Value::Null }
    }
    /// Sets the reducer (and a fitting default: `[]` for append/messages, `{}` for maps, `0` for counters).
    pub fn reducer(mut self, reducer: Reducer) -> Self {
        self.default = match reducer {
            Reducer::Append | Reducer::Messages => Value::Array(Vec::new()),
            Reducer::MergeMap => Value::Object(Map::new()),
            Reducer::Counter => Value::from(0),
            _ => self.default,
        };
        self.reducer = reducer;
        self
    }
    /// Sets the scope.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }
    /// Sets the default value.
    pub fn default_value(mut self, default: Value) -> Self {
        self.default = default;
        self
    }
    /// The field's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The field's scope.
    pub fn field_scope(&self) -> Scope {
        self.scope
    }
}

/// Migrates a materialised state (field name to value) from one schema version to the next.
pub type Migration = Arc<dyn Fn(&mut Map<String, Value>) -> Result<(), String> + Send + Sync>;

/// The state's fields, its version and the migrations from older versions.
#[derive(Clone)]
pub struct Schema {
    pub(crate) version: u32,
    pub(crate) fields: Vec<Field>,
    pub(crate) by_name: HashMap<String, usize>,
    pub(crate) migrations: HashMap<u32, Migration>,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema").field("version", &self.version).field("fields", &self.fields).finish()
    }
}

impl Schema {
    /// Starts a schema at version 1.
    pub fn builder() -> SchemaBuilder {
        SchemaBuilder { version: 1, fields: Vec::new(), migrations: HashMap::new() }
    }
    /// The schema version written into checkpoints.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// The fields in declaration order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }
    /// Index of a field by name.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
    pub(crate) fn migration(&self, from: u32) -> Option<&Migration> {
        self.migrations.get(&from)
    }
}

/// Builds a [`Schema`].
pub struct SchemaBuilder {
    version: u32,
    fields: Vec<Field>,
    migrations: HashMap<u32, Migration>,
}

impl SchemaBuilder {
    /// Sets the schema version (default 1).
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }
    /// Adds a field.
    pub fn field(mut self, field: Field) -> Self {
        self.fields.push(field);
        self
    }
    /// Registers the migration from version `from` to `from + 1`.
    pub fn migration(
        mut self,
        from: u32,
        f: impl Fn(&mut Map<String, Value>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.migrations.insert(from, Arc::new(f));
        self
    }
    /// Validates the schema.
    ///
    /// # Errors
    /// [`crate::GraphError::DuplicateField`] when a field name repeats.
    pub fn build(self) -> Result<Schema, crate::GraphError> {
        let mut by_name = HashMap::with_capacity(self.fields.len());
        for (i, f) in self.fields.iter().enumerate() {
            if by_name.insert(f.name.to_string(), i).is_some() {
                return Err(crate::GraphError::DuplicateField(f.name.to_string()));
            }
        }
        Ok(Schema { version: self.version, fields: self.fields, by_name, migrations: self.migrations })
    }
}

/// Writes a node wants to make, applied through each field's reducer in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    pub(crate) writes: Vec<(Cow<'static, str>, Value)>,
}

impl Update {
    /// An empty update.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a write of `value` to `field`.
    pub fn set(mut self, field: impl Into<Cow<'static, str>>, value: impl Into<Value>) -> Self {
        self.writes.push((field.into(), value.into()));
        self
    }
    /// Adds a write in place.
    pub fn push(&mut self, field: impl Into<Cow<'static, str>>, value: impl Into<Value>) {
        self.writes.push((field.into(), value.into()));
    }
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
    /// The writes in order.
    pub fn writes(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.writes.iter().map(|(k, v)| (k.as_ref(), v))
    }
    /// Appends another update's writes after this one's.
    pub fn extend(&mut self, other: Update) {
        self.writes.extend(other.writes);
    }
    /// The update as a JSON object (later writes of one field overwrite earlier ones in the view).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in &self.writes {
            m.insert(k.to_string(), v.clone());
        }
        Value::Object(m)
    }
}

impl From<Map<String, Value>> for Update {
    fn from(m: Map<String, Value>) -> Self {
        Self { writes: m.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect() }
    }
}

/// A reducer-independent record of one change to one field (what checkpoints store).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "o", rename_all = "lowercase")]
pub enum Patch {
    /// The field's new value.
    #[serde(rename = "s")]
    Set {
        /// Field name.
        f: String,
        /// New value.
        v: Value,
    },
    /// Items appended to an array field.
    #[serde(rename = "a")]
    Append {
        /// Field name.
        f: String,
        /// Appended items.
        v: Vec<Value>,
    },
    /// Messages upserted or removed (see [`Reducer::Messages`]).
    #[serde(rename = "m")]
    Messages {
        /// Field name.
        f: String,
        /// Normalised messages, each with an id.
        v: Vec<Value>,
    },
    /// Keys merged into an object field (`null` deletes).
    #[serde(rename = "g")]
    Merge {
        /// Field name.
        f: String,
        /// The merged keys.
        v: Map<String, Value>,
    },
}

impl Patch {
    /// The field this patch changes.
    pub fn field(&self) -> &str {
        match self {
            Self::Set { f, .. } | Self::Append { f, .. } | Self::Messages { f, .. } | Self::Merge { f, .. } => f,
        }
    }
}

static MESSAGE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh message id, unique within this process and very unlikely to repeat across processes.
pub fn new_message_id() -> String {
    let n = MESSAGE_SEQ.fetch_add(1, Ordering::Relaxed);
    format!("m{:x}{:04x}", crate::ids::process_nonce(), n)
}

fn type_err(field: &str, reason: impl Into<String>) -> ReducerError {
    ReducerError { field: field.to_string(), reason: reason.into() }
}

fn into_items(update: Value) -> Vec<Value> {
    match update {
        Value::Array(items) => items,
        other => vec![other],
    }
}

/// Applies normalised messages (each with an id, or a removal marker) to a message list.
fn apply_messages(field: &str, list: &mut Vec<Value>, items: &[Value]) -> Result<(), ReducerError> {
    for item in items {
        let obj = item.as_object().ok_or_else(|| type_err(field, "a message must be an object"))?;
        if obj.get("$remove_all").and_then(Value::as_bool) == Some(true) {
            list.clear();
            continue;
        }
        let id = obj.get("id").and_then(Value::as_str).ok_or_else(|| type_err(field, "message has no string id"))?;
        let pos = list.iter().rposition(|m| m.get("id").and_then(Value::as_str) == Some(id));
        if obj.get("$remove").and_then(Value::as_bool) == Some(true) {
            match pos {
                Some(p) => {
                    list.remove(p);
                }
                None => return Err(type_err(field, format!("cannot remove unknown message `{id}`"))),
            }
        } else if let Some(p) = pos {
            list[p] = item.clone();
        } else {
            list.push(item.clone());
        }
    }
    Ok(())
}

impl Reducer {
    /// Folds `update` into `current` and returns the patch that records the change.
    pub(crate) fn reduce(&self, field: &str, current: &mut Value, update: Value) -> Result<Patch, ReducerError> {
        match self {
            Self::Replace => {
                *current = update.clone();
                Ok(Patch::Set { f: field.to_string(), v: update })
            }
            Self::Append => {
                let items = into_items(update);
                let arr = ensure_array(field, current)?;
                arr.extend(items.iter().cloned());
                Ok(Patch::Append { f: field.to_string(), v: items })
            }
            Self::Messages => {
                let mut items = into_items(update);
                for item in &mut items {
                    let obj = item.as_object_mut().ok_or_else(|| type_err(field, "a message must be an object"))?;
                    if !obj.contains_key("id") && !obj.contains_key("$remove_all") {
                        obj.insert("id".into(), Value::String(new_message_id()));
                    }
                }
                let arr = ensure_array(field, current)?;
                apply_messages(field, arr, &items)?;
                Ok(Patch::Messages { f: field.to_string(), v: items })
            }
            Self::MergeMap => {
                let Value::Object(upd) = update else {
                    return Err(type_err(field, "merge-map update must be an object"));
                };
                merge_into(field, current, &upd)?;
                Ok(Patch::Merge { f: field.to_string(), v: upd })
            }
            Self::Counter => {
                let add = update.as_f64().ok_or_else(|| type_err(field, "counter update must be a number"))?;
                let new = match (current.as_i64(), update.as_i64()) {
                    (Some(a), Some(b)) => Value::from(a.saturating_add(b)),
                    _ => {
                        let base = if current.is_null() { 0.0 } else { current.as_f64().unwrap_or(0.0) };
                        serde_json::Number::from_f64(base + add)
                            .map(Value::Number)
                            .ok_or_else(|| type_err(field, "counter overflowed to a non-finite number"))?
                    }
                };
                *current = new.clone();
                Ok(Patch::Set { f: field.to_string(), v: new })
            }
            Self::Custom(name, f) => {
                let new = f(current, update).map_err(|e| type_err(field, format!("reducer `{name}`: {e}")))?;
                *current = new.clone();
                Ok(Patch::Set { f: field.to_string(), v: new })
            }
        }
    }
}

fn ensure_array<'a>(field: &str, v: &'a mut Value) -> Result<&'a mut Vec<Value>, ReducerError> {
    if v.is_null() {
        *v = Value::Array(Vec::new());
    }
    v.as_array_mut().ok_or_else(|| type_err(field, "field is not an array"))
}

fn merge_into(field: &str, current: &mut Value, upd: &Map<String, Value>) -> Result<(), ReducerError> {
    if current.is_null() {
        *current = Value::Object(Map::new());
    }
    let obj = current.as_object_mut().ok_or_else(|| type_err(field, "field is not an object"))?;
    for (k, v) in upd {
        if v.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
    Ok(())
}

/// Applies a stored patch to a value (used when a checkpoint chain is replayed).
pub(crate) fn apply_patch(current: &mut Value, patch: &Patch) -> Result<(), ReducerError> {
    match patch {
        Patch::Set { v, .. } => *current = v.clone(),
        Patch::Append { f, v } => ensure_array(f, current)?.extend(v.iter().cloned()),
        Patch::Messages { f, v } => {
            let arr = ensure_array(f, current)?;
            apply_messages(f, arr, v)?;
        }
        Patch::Merge { f, v } => merge_into(f, current, v)?,
    }
    Ok(())
}

/// The values of every field of one conversation at one point in time.
#[derive(Clone)]
pub struct State {
    pub(crate) schema: Arc<Schema>,
    pub(crate) values: Vec<Value>,
    /// Checkpoint id at which each field last changed (0 = default).
    pub(crate) versions: Vec<u64>,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.schema.fields.iter().map(|fl| fl.name.as_ref()).zip(&self.values)).finish()
    }
}

impl State {
    /// A state with every field at its default.
    pub fn new(schema: Arc<Schema>) -> Self {
        let values = schema.fields.iter().map(|f| f.default.clone()).collect();
        let versions = vec![0; schema.fields.len()];
        Self { schema, values, versions }
    }
    /// The schema.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }
    /// A field's value (`None` if the schema has no such field).
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.schema.index(field).map(|i| &self.values[i])
    }
    /// A string field's value.
    pub fn get_str(&self, field: &str) -> Option<&str> {
        self.get(field).and_then(Value::as_str)
    }
    /// A boolean field's value (`false` when absent or not a boolean).
    pub fn get_bool(&self, field: &str) -> bool {
        self.get(field).and_then(Value::as_bool).unwrap_or(false)
    }
    /// An array field's items (empty when absent or not an array).
    pub fn get_array(&self, field: &str) -> &[Value] {
        self.get(field).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
    }
    /// The checkpoint id at which a field last changed.
    pub fn version_of(&self, field: &str) -> Option<u64> {
        self.schema.index(field).map(|i| self.versions[i])
    }
    /// The state as a JSON object of all fields.
    pub fn to_json(&self) -> Value {
        Value::Object(self.to_map(|_| true))
    }
    pub(crate) fn to_map(&self, keep: impl Fn(&Field) -> bool) -> Map<String, Value> {
        let mut m = Map::new();
        for (f, v) in self.schema.fields.iter().zip(&self.values) {
            if keep(f) {
                m.insert(f.name.to_string(), v.clone());
            }
        }
        m
    }

    /// Applies an update through the reducers, stamping changed fields with `version`.
    ///
    /// # Errors
    /// [`ReducerError`] if a value does not fit its field, or the field is unknown (reported with the
    /// field name); the state may then be partly updated, so callers apply to a copy.
    pub fn apply(&mut self, update: Update, version: u64, patches: &mut Vec<Patch>) -> Result<(), ReducerError> {
        for (name, value) in update.writes {
            let i = self
                .schema
                .index(&name)
                .ok_or_else(|| ReducerError { field: name.to_string(), reason: "no such field".into() })?;
            let field = &self.schema.fields[i];
            let patch = field.reducer.reduce(&name, &mut self.values[i], value)?;
            self.versions[i] = version;
            // Only conversation-scoped fields are checkpointed; the others live in the context store.
            if field.scope == Scope::Conversation {
                patches.push(patch);
            }
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn apply_patches(&mut self, patches: &[Patch], version: u64) -> Result<(), ReducerError> {
        for p in patches {
            // Patches of fields that no longer exist were dropped by a migration; ignore them.
            if let Some(i) = self.schema.index(p.field()) {
                apply_patch(&mut self.values[i], p)?;
                self.versions[i] = version;
            }
        }
        Ok(())
    }

    /// Resets temporary fields to their defaults (done at the start of each run).
    pub(crate) fn reset_temporary(&mut self) {
        for (i, f) in self.schema.fields.iter().enumerate() {
            if f.scope == Scope::Temporary {
                self.values[i] = f.default.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn schema() -> Arc<Schema> {
        Arc::new(
            Schema::builder()
                .field(Field::new("messages").reducer(Reducer::Messages))
                .field(Field::new("log").reducer(Reducer::Append))
                .field(Field::new("slots").reducer(Reducer::MergeMap))
                .field(Field::new("count").reducer(Reducer::Counter))
                .field(Field::new("intent"))
                .field(Field::new("max").reducer(Reducer::Custom(
                    "max",
                    Arc::new(|cur, upd| {
                        let a = cur.as_i64().unwrap_or(i64::MIN);
                        let b = upd.as_i64().ok_or("not an integer")?;
                        Ok(Value::from(a.max(b)))
                    }),
                )))
                .field(Field::new("scratch").scope(Scope::Temporary))
                .build()
                .unwrap(),
        )
    }

    macro_rules! reduce_cases {
        ($($name:ident: $field:expr, [$($upd:expr),*] => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                let mut s = State::new(schema());
                let mut patches = Vec::new();
                $( s.apply(Update::new().set($field, $upd), 1, &mut patches).unwrap(); )*
                assert_eq!(s.get($field).unwrap(), &$want);
            }
        )*};
    }

    reduce_cases! {
        replace_keeps_last: "intent", [json!("a"), json!("b")] => json!("b");
        append_items_and_arrays: "log", [json!(1), json!([2, 3])] => json!([1, 2, 3]);
        merge_sets_and_deletes: "slots", [json!({"a": 1, "b": 2}), json!({"a": null, "c": 3})] => json!({"b": 2, "c": 3});
        counter_adds_integers: "count", [json!(2), json!(3)] => json!(5);
        counter_adds_floats: "count", [json!(1), json!(0.5)] => json!(1.5);
        custom_reducer_keeps_max: "max", [json!(4), json!(2), json!(9)] => json!(9);
        messages_upsert_by_id: "messages", [json!({"id": "a", "text": "x"}), json!({"id": "a", "text": "y"})] => json!([{"id": "a", "text": "y"}]);
        messages_remove: "messages", [json!([{"id": "a"}, {"id": "b"}]), json!({"id": "a", "$remove": true})] => json!([{"id": "b"}]);
        messages_remove_all: "messages", [json!([{"id": "a"}, {"id": "b"}]), json!({"$remove_all": true})] => json!([]);
    }

    #[test]
    fn messages_get_ids() {
        let mut s = State::new(schema());
        s.apply(Update::new().set("messages", json!({"text": "hi"})), 1, &mut Vec::new()).unwrap();
        assert!(s.get_array("messages")[0]["id"].is_string());
    }

    #[test]
    fn bad_updates_are_typed_errors() {
        let mut s = State::new(schema());
        let e = s.apply(Update::new().set("count", "x"), 1, &mut Vec::new()).unwrap_err();
        assert_eq!(e.field, "count");
        let e = s.apply(Update::new().set("slots", json!([1])), 1, &mut Vec::new()).unwrap_err();
        assert!(e.reason.contains("object"));
        let e = s.apply(Update::new().set("nope", 1), 1, &mut Vec::new()).unwrap_err();
        assert_eq!(e.reason, "no such field");
        let e = s.apply(Update::new().set("messages", json!({"id": "zz", "$remove": true})), 1, &mut Vec::new());
        assert!(e.is_err());
    }

    #[test]
    fn temporary_fields_are_not_patched() {
        let mut s = State::new(schema());
        let mut patches = Vec::new();
        s.apply(Update::new().set("scratch", 1).set("intent", "x"), 1, &mut patches).unwrap();
        assert_eq!(patches.len(), 1);
        assert_eq!(s.version_of("intent"), Some(1));
    }

    fn arb_update() -> impl Strategy<Value = (usize, Value)> {
        prop_oneof![
            (0usize..4, "[a-e]{0,3}").prop_map(|(i, s)| (0, json!({"id": format!("m{i}"), "text": s}))),
            (0usize..4).prop_map(|i| (0, json!({"id": format!("m{i}"), "$remove": true}))),
            any::<i32>().prop_map(|n| (1, json!(n))),
            ("[a-c]", proptest::option::of(0i32..5)).prop_map(|(k, v)| (2, json!({ k: v }))),
            (-5i64..5).prop_map(|n| (3, json!(n))),
            "[a-z]{0,4}".prop_map(|s| (4, json!(s))),
            (0i64..100).prop_map(|n| (5, json!(n))),
        ]
    }

    proptest! {
        /// Replaying the recorded patches from the defaults rebuilds exactly the reduced state,
        /// whether patches are replayed one by one or all at once.
        #[test]
        fn patches_replay_to_the_same_state(updates in proptest::collection::vec(arb_update(), 0..40)) {
            let sc = schema();
            let names = ["messages", "log", "slots", "count", "intent", "max"];
            let mut live = State::new(sc.clone());
            let mut patches = Vec::new();
            for (i, v) in updates {
                let mut copy = live.clone();
                let mut p = Vec::new();
                // A failed update (e.g. removing an unknown message) leaves the state as it was.
                if copy.apply(Update::new().set(names[i], v), 1, &mut p).is_ok() {
                    live = copy;
                    patches.extend(p);
                }
            }
            let mut replay = State::new(sc);
            replay.apply_patches(&patches, 1).unwrap();
            prop_assert_eq!(replay.to_json(), live.to_json());
        }

        /// Counters and appends compose: applying a then b equals applying b then a for commutative reducers.
        #[test]
        fn counter_is_commutative(a in -1000i64..1000, b in -1000i64..1000) {
            let mut x = State::new(schema());
            x.apply(Update::new().set("count", a).set("count", b), 1, &mut Vec::new()).unwrap();
            let mut y = State::new(schema());
            y.apply(Update::new().set("count", b).set("count", a), 1, &mut Vec::new()).unwrap();
            prop_assert_eq!(x.get("count"), y.get("count"));
        }
    }
}
