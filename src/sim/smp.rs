//! Strategic merge patch, as the apiserver applies it to the kinds the sim serves.
//!
//! This follows current k8s.io/apimachinery `strategicpatch.StrategicMergeMapPatch` on the
//! server side (parallel deletion lists applied, unmatched nulls ignored), driven by the
//! built-in [`schema`] of merge keys and patch strategies, down to its list ordering and
//! error wording; `tests/sim_smp_kubectl.rs` holds it against kubectl's own copy. Where the
//! result differs from upstream's map it is on purpose:
//! - directive keys left in values taken whole from the patch are removed, as the
//!   apiserver's typed decode drops them;
//! - `$deleteFromPrimitiveList` runs after the other keys of its map (upstream's order is
//!   Go's random map order);
//! - a `$`-key that is no directive is an error (a real server drops or rejects it as an
//!   unknown field);
//! - where upstream would panic (comparing maps, null list items) an [`SmpError`] is
//!   returned.

mod gosort;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::model::Resource;
use schema::{Field, Ty};

/// Why a strategic merge patch could not be applied (answered as 400 or 422 by the server).
///
/// The message is worded as the apiserver words it, so it can be passed on as is.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SmpError {
    #[error("{0}")]
    Invalid(String),
}

impl SmpError {
    /// The message, as the apiserver would put it in a Status.
    pub fn message(&self) -> &str {
        match self {
            SmpError::Invalid(message) => message,
        }
    }
}

type Map = serde_json::Map<String, Value>;
type Result<T, E = SmpError> = std::result::Result<T, E>;

const DIRECTIVE_MARKER: &str = "$patch";
const DELETE_DIRECTIVE: &str = "delete";
const REPLACE_DIRECTIVE: &str = "replace";
const MERGE_DIRECTIVE: &str = "merge";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";

const ERR_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const ERR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_SET_ELEMENT_ORDER: &str = "invalid patch format of setElementOrder list";
const ERR_LIST_OF_LISTS: &str = "lists of lists are not supported";

/// Applies a strategic merge patch to `original` using the merge keys and patch strategies of
/// `resource`'s schema, returning the patched object.
pub fn apply(resource: Resource, original: &Value, patch: &Value) -> Result<Value, SmpError> {
    let patch = match patch {
        Value::Object(patch) => patch.clone(),
        // Go's json.Unmarshal of `null` into a map leaves it empty: nothing to apply.
        Value::Null => return Ok(original.clone()),
        other => {
            return Err(invalid(format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                json_kind(other)
            )));
        }
    };
    let original = match original {
        Value::Object(original) => original.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(invalid(format!(
                "the object to patch is not a JSON object but {}",
                json_kind(other)
            )));
        }
    };
    let root = schema::root(resource);
    check_directive_names(&patch, root)?;
    let mut patched = Value::Object(merge_map(original, patch, root)?);
    strip_directives(&mut patched, root);
    Ok(patched)
}

fn invalid(message: impl Into<String>) -> SmpError {
    SmpError::Invalid(message.into())
}

/// Rejects `$`-keys that are no strategic-merge directive (no real field starts with `$`).
fn check_directive_names(patch: &Map, ty: Ty) -> Result<()> {
    if ty == Ty::Raw {
        return Ok(());
    }
    for (key, value) in patch {
        if key.starts_with('$')
            && key != DIRECTIVE_MARKER
            && key != RETAIN_KEYS_DIRECTIVE
            && !key.starts_with(SET_ELEMENT_ORDER_PREFIX)
            && !key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
        {
            return Err(invalid(format!(
                "unknown strategic merge patch directive {key:?}"
            )));
        }
        let child = schema::field(ty, key).ty;
        match value {
            Value::Object(map) => check_directive_names(map, child)?,
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(map) = item {
                        check_directive_names(map, child)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE_MARKER
        || key == RETAIN_KEYS_DIRECTIVE
        || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
}

/// Removes directive keys that reached the result inside values taken whole from the patch.
fn strip_directives(value: &mut Value, ty: Ty) {
    if ty == Ty::Raw {
        return;
    }
    match value {
        Value::Object(map) => {
            map.retain(|key, _| !is_directive_key(key));
            for (key, child) in map.iter_mut() {
                strip_directives(child, schema::field(ty, key).ty);
            }
        }
        Value::Array(items) => {
            for item in items {
                strip_directives(item, ty);
            }
        }
        _ => {}
    }
}

/// A value taken whole from the patch: nulls discarded, then upstream `removeDirectives`.
fn take_patch_value(value: Value) -> Option<Value> {
    remove_directives(discard_nulls(value))
}

/// Upstream `removeDirectives`: a map carrying `$patch` is dropped from wherever it sits
/// (`None` for the value itself), at every depth.
fn remove_directives(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) => {
            if map.contains_key(DIRECTIVE_MARKER) {
                return None;
            }
            Some(Value::Object(
                map.into_iter()
                    .filter_map(|(k, v)| remove_directives(v).map(|v| (k, v)))
                    .collect(),
            ))
        }
        Value::Array(items) => Some(Value::Array(
            items.into_iter().filter_map(remove_directives).collect(),
        )),
        other => Some(other),
    }
}

/// Upstream `discardNullValuesFromPatch`: drops null map entries, at every depth.
fn discard_nulls(mut value: Value) -> Value {
    discard_nulls_in_place(&mut value);
    value
}

fn discard_nulls_in_place(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(discard_nulls_in_place);
        }
        Value::Array(items) => items.iter_mut().for_each(discard_nulls_in_place),
        _ => {}
    }
}

/// Upstream `mergeMap`.
fn merge_map(mut original: Map, mut patch: Map, ty: Ty) -> Result<Map> {
    if let Some(directive) = patch.get(DIRECTIVE_MARKER) {
        return match directive.as_str() {
            // The rest of the patch map replaces the original map.
            Some(REPLACE_DIRECTIVE) => {
                patch.remove(DIRECTIVE_MARKER);
                Ok(patch)
            }
            Some(DELETE_DIRECTIVE) => Ok(Map::new()),
            _ => Err(bad_patch_type(directive, &patch)),
        };
    }
    apply_retain_keys(&mut original, &mut patch)?;
    merge_ordered_lists(&mut original, &mut patch, ty)?;

    // Upstream visits keys in Go's random map order; running the deletion lists last makes
    // a deletion win over an addition of the same item, as it does most of the time there.
    let (deletions, others): (Vec<_>, Vec<_>) = patch
        .into_iter()
        .partition(|(key, _)| key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX));
    for (key, patch_value) in others.into_iter().chain(deletions) {
        let (key, is_delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
            (extract_key(&key, DELETE_FROM_PRIMITIVE_LIST_PREFIX)?, true)
        } else {
            (key, false)
        };
        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        let Some(current) = original.remove(&key) else {
            if !is_delete_list && let Some(value) = take_patch_value(patch_value) {
                original.insert(key, value);
            }
            continue;
        };
        let field = schema::field(ty, &key);
        let merged = match (current, patch_value) {
            (Value::Object(current), Value::Object(patch_map)) => {
                if ty == Ty::Raw {
                    return Err(unknown_raw_field(&key));
                }
                Value::Object(merge_map(current, patch_map, field.ty)?)
            }
            (Value::Array(current), Value::Array(patch_list)) => {
                if ty == Ty::Raw {
                    return Err(unknown_raw_field(&key));
                }
                Value::Array(merge_slice_handler(
                    current,
                    patch_list,
                    field,
                    is_delete_list,
                )?)
            }
            (current, patch_value) => {
                if go_type(&current) == go_type(&patch_value) {
                    // Two scalars of one type: the patch wins, even for a deletion list.
                    patch_value
                } else if is_delete_list {
                    current
                } else {
                    match take_patch_value(patch_value) {
                        Some(value) => value,
                        None => continue,
                    }
                }
            }
        };
        original.insert(key, merged);
    }
    Ok(original)
}

fn unknown_raw_field(key: &str) -> SmpError {
    invalid(format!(
        "unable to find api field in struct RawExtension for the json field {key:?}"
    ))
}

/// Upstream `extractKey`: `$prefix/field` → `field`.
fn extract_key(key: &str, prefix: &str) -> Result<String> {
    match key.split_once('/') {
        Some((head, field)) if head == prefix => Ok(field.to_string()),
        _ if prefix == DELETE_FROM_PRIMITIVE_LIST_PREFIX => Err(invalid(ERR_PRIMITIVE_LIST)),
        _ => Err(invalid(ERR_SET_ELEMENT_ORDER)),
    }
}

/// Upstream `applyRetainKeysDirective` (server side): clears the original keys not listed.
fn apply_retain_keys(original: &mut Map, patch: &mut Map) -> Result<()> {
    let Some(retain) = patch.remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(invalid(ERR_RETAIN_KEYS));
    };
    let retained: HashSet<&str> = retain.iter().filter_map(Value::as_str).collect();
    for (key, value) in patch.iter() {
        if value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
        {
            continue;
        }
        if !retained.contains(key.as_str()) {
            return Err(invalid(ERR_RETAIN_KEYS));
        }
    }
    original.retain(|key, _| retained.contains(key.as_str()));
    Ok(())
}

/// Upstream `mergePatchIntoOriginal`: merges each list that has a `$setElementOrder/<field>`
/// and puts its items in that order (listed items first by the order list, server-only items
/// interleaved by their live order).
fn merge_ordered_lists(original: &mut Map, patch: &mut Map, ty: Ty) -> Result<()> {
    let order_keys: Vec<String> = patch
        .keys()
        .filter(|key| key.starts_with(SET_ELEMENT_ORDER_PREFIX))
        .cloned()
        .collect();
    for order_key in order_keys {
        let Some(order) = patch.remove(&order_key) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(bad_arg_type(GO_SLICE, &order));
        };
        let field_key = extract_key(&order_key, SET_ELEMENT_ORDER_PREFIX)?;
        let original_list = match original.get(&field_key) {
            None => None,
            Some(Value::Array(items)) => Some(items.clone()),
            Some(other) => return Err(bad_arg_type(GO_SLICE, other)),
        };
        let patch_list = match patch.get(&field_key) {
            None => None,
            Some(Value::Array(items)) => Some(items.clone()),
            Some(other) => return Err(bad_arg_type(GO_SLICE, other)),
        };
        let field = schema::field(ty, &field_key);
        let merge_key = field.merge_key_or_empty();
        validate_patch_with_set_order(patch_list.as_deref().unwrap_or(&[]), &order, merge_key)?;

        let merged = match (&original_list, &patch_list) {
            (Some(current), None) => current.clone(),
            // A new list: maps carrying `$patch` are dropped (upstream `removeDirectives`).
            (None, Some(patch_items)) => patch_items
                .iter()
                .cloned()
                .filter_map(remove_directives)
                .collect(),
            (Some(current), Some(patch_items)) => {
                merge_slice_handler(current.clone(), patch_items.clone(), field, false)?
            }
            (None, None) => continue,
        };
        let (patch_items, server_only) = partition(merged, &order, merge_key)?;
        let live_order = match (original_list, &patch_list) {
            (Some(current), Some(patch_items)) if field.merge_list && !merge_key.is_empty() => {
                live_order_after_merge(current, patch_items, merge_key)
            }
            (current, _) => current.unwrap_or_default(),
        };
        let kind = slice_element_type(&[&live_order, patch_list.as_deref().unwrap_or(&[])])?;
        let ordered = normalize_element_order(
            patch_items,
            server_only,
            &order,
            &live_order,
            merge_key,
            kind,
        )?;
        original.insert(field_key.clone(), Value::Array(ordered));
        patch.remove(&field_key);
    }
    Ok(())
}

/// The live list as upstream's `mergePatchIntoOriginal` sees it after merging a list of maps.
///
/// Upstream keeps ordering by the original list's slice while `mergeSlice` edits the same
/// backing array: each `$patch: delete` shifts the later items left, and each appended item
/// lands in the next free slot. Within the original length those writes are visible and
/// change which live position an item has, so the order of server-only items depends on
/// them. This replays the writes that touch merge keys.
fn live_order_after_merge(original: Vec<Value>, patch: &[Value], key: &str) -> Vec<Value> {
    let capacity = original.len();
    let key_of = |item: &Value| item.get(key).and_then(lookup_key);
    let mut by_key: HashMap<ScalarKey, Vec<usize>> = HashMap::new();
    for (position, item) in original.iter().enumerate() {
        if let Some(k) = key_of(item) {
            by_key.entry(k).or_default().push(position);
        }
    }
    // What the backing array holds at each position from the final length on: Go's
    // append(s[:i], s[i+1:]...) leaves the then-last item in the slot it vacates.
    let mut vacated: Vec<Option<Value>> = vec![None; capacity];
    let mut removed = vec![false; capacity];
    let mut len = capacity;
    let mut last = capacity.checked_sub(1);
    let mut replace = false;
    for item in patch {
        match item.get(DIRECTIVE_MARKER).and_then(Value::as_str) {
            Some(DELETE_DIRECTIVE) => {
                let Some(doomed) = item.get(key).and_then(lookup_key) else {
                    continue;
                };
                // Upstream removes the first match again and again: ascending live order.
                for position in by_key.remove(&doomed).unwrap_or_default() {
                    if let Some(tail) = last {
                        vacated[len - 1] = Some(original[tail].clone());
                    }
                    removed[position] = true;
                    len -= 1;
                    while let Some(tail) = last.filter(|&t| removed[t]) {
                        last = tail.checked_sub(1);
                    }
                }
            }
            Some(_) => replace = true,
            None => {}
        }
    }
    let mut present: HashSet<ScalarKey> = HashSet::new();
    let mut live: Vec<Value> = Vec::with_capacity(capacity);
    for (position, item) in original.into_iter().enumerate() {
        if !removed[position] {
            if let Some(k) = key_of(&item) {
                present.insert(k);
            }
            live.push(item);
        }
    }
    live.extend(vacated.drain(len..).flatten());
    if replace {
        return live;
    }
    for item in patch.iter().filter(|item| !has_directive_marker(item)) {
        if let Some(k) = key_of(item)
            && !present.insert(k)
        {
            continue;
        }
        if len < capacity {
            live[len] = item.clone();
        }
        len += 1;
    }
    live
}

/// Upstream `validatePatchWithSetOrderList`: the patch list's items must appear in the
/// `$setElementOrder` list, in the same relative order.
fn validate_patch_with_set_order(patch_list: &[Value], order: &[Value], key: &str) -> Result<()> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let kept: Vec<&Value> = if key.is_empty() {
        patch_list.iter().collect()
    } else {
        let mut kept = Vec::with_capacity(patch_list.len());
        for item in patch_list {
            let Value::Object(map) = item else {
                return Err(bad_arg_type(GO_MAP, item));
            };
            if map.get(DIRECTIVE_MARKER).and_then(Value::as_str) != Some(DELETE_DIRECTIVE) {
                kept.push(item);
            }
        }
        kept
    };
    let (mut p, mut s) = (0, 0);
    while p < kept.len() && s < order.len() {
        if has_directive_marker(kept[p]) {
            p += 1;
            continue;
        }
        if merge_key_value_equal(kept[p], &order[s], key)? {
            p += 1;
        }
        s += 1;
    }
    if p < kept.len() && s >= order.len() {
        return Err(invalid(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER_PREFIX} list:\n{}\n",
            go_fmt_list(patch_list),
            go_fmt_list(order)
        )));
    }
    Ok(())
}

fn has_directive_marker(item: &Value) -> bool {
    item.as_object()
        .is_some_and(|map| map.contains_key(DIRECTIVE_MARKER))
}

/// Upstream `mergeKeyValueEqual`.
fn merge_key_value_equal(left: &Value, right: &Value, key: &str) -> Result<bool> {
    if key.is_empty() {
        return go_equal(left, right);
    }
    let Value::Object(left_map) = left else {
        return Err(bad_arg_type(GO_MAP, left));
    };
    let Value::Object(right_map) = right else {
        return Err(bad_arg_type(GO_MAP, right));
    };
    let left_value = left_map
        .get(key)
        .ok_or_else(|| no_merge_key(left_map, key))?;
    let right_value = right_map
        .get(key)
        .ok_or_else(|| no_merge_key(right_map, key))?;
    go_equal(left_value, right_value)
}

/// Upstream `mergeSliceHandler`: merge-strategy lists merge, and so do deletion lists
/// whatever the field's strategy; every other list is replaced.
fn merge_slice_handler(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: Field,
    is_delete_list: bool,
) -> Result<Vec<Value>> {
    if field.merge_list || is_delete_list {
        merge_slice(
            original,
            patch,
            field.ty,
            field.merge_key_or_empty(),
            is_delete_list,
        )
    } else {
        Ok(patch)
    }
}

/// Upstream `mergeSlice`.
fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    ty: Ty,
    key: &str,
    is_delete_list: bool,
) -> Result<Vec<Value>> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let kind = slice_element_type(&[&original, &patch])?;
    let (original, patch, merged) = if kind != GoType::Map {
        if is_delete_list {
            return delete_from_slice(original, &patch);
        }
        let mut both = original.clone();
        both.extend(patch.iter().cloned());
        let merged = deduplicate_scalars(both)?;
        (original, patch, merged)
    } else {
        if key.is_empty() {
            return Err(invalid(format!(
                "cannot merge lists without merge key for {ty:?}"
            )));
        }
        let (original, patch) = merge_slice_with_special_elements(original, patch, key)?;
        let merged = merge_slice_without_special_elements(original.clone(), &patch, key, ty)?;
        (original, patch, merged)
    };
    let (patch_items, server_only) = partition(merged, &patch, key)?;
    normalize_element_order(patch_items, server_only, &patch, &original, key, kind)
}

/// Upstream `mergeSliceWithSpecialElements`: applies `$patch: delete` items and notes
/// `$patch: replace`, returning the new original and the patch without directive items.
fn merge_slice_with_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    let mut doomed: HashSet<ScalarKey> = HashSet::new();
    for item in patch {
        let Value::Object(map) = &item else {
            return Err(bad_arg_type(GO_MAP, &item));
        };
        let Some(directive) = map.get(DIRECTIVE_MARKER) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some(DELETE_DIRECTIVE) => {
                let value = map.get(key).ok_or_else(|| no_merge_key(map, key))?;
                let wanted = comparable_key(value)?;
                if doomed.is_empty() {
                    check_all_maps(&original, key, &wanted)?;
                }
                doomed.insert(wanted);
            }
            // Keep going: the other directive items are pruned too.
            Some(REPLACE_DIRECTIVE) => replace = true,
            Some(MERGE_DIRECTIVE) => {
                return Err(invalid(
                    "merging lists cannot yet be specified in the patch",
                ));
            }
            _ => return Err(bad_patch_type(directive, map)),
        }
    }
    if replace {
        Ok((plain, Vec::new()))
    } else {
        if !doomed.is_empty() {
            // Upstream `deleteMatchingEntries`: every item whose merge key matches goes.
            original.retain(|item| {
                item.get(key)
                    .and_then(lookup_key)
                    .is_none_or(|k| !doomed.contains(&k))
            });
        }
        Ok((original, plain))
    }
}

/// Upstream `deleteMatchingEntries` fails on a non-map item: its repeated scan from the
/// start reaches the first one, at its index once the earlier matches are gone.
fn check_all_maps(original: &[Value], key: &str, wanted: &ScalarKey) -> Result<()> {
    let mut matched_before = 0;
    for (position, item) in original.iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(invalid(format!(
                "value for key {} is not a map",
                position - matched_before
            )));
        };
        if map.get(key).and_then(lookup_key).as_ref() == Some(wanted) {
            matched_before += 1;
        }
    }
    Ok(())
}

/// Upstream `mergeSliceWithoutSpecialElements`: merges each patch item into the original
/// item with the same merge key, or appends it.
fn merge_slice_without_special_elements(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    ty: Ty,
) -> Result<Vec<Value>> {
    let mut index = KeyIndex::new(&original, key);
    for item in patch {
        let Value::Object(patch_map) = item else {
            return Err(bad_arg_type(GO_MAP, item));
        };
        let value = patch_map
            .get(key)
            .ok_or_else(|| no_merge_key(patch_map, key))?;
        match index.find(value)? {
            Some(position) => {
                let current = match std::mem::take(&mut original[position]) {
                    Value::Object(map) => map,
                    _ => Map::new(),
                };
                original[position] = Value::Object(merge_map(current, patch_map.clone(), ty)?);
            }
            None => {
                original.push(item.clone());
                index.appended(value, original.len() - 1);
            }
        }
    }
    Ok(original)
}

/// Upstream `deleteFromSlice` for `$deleteFromPrimitiveList`.
fn delete_from_slice(current: Vec<Value>, to_delete: &[Value]) -> Result<Vec<Value>> {
    let doomed = to_delete
        .iter()
        .map(comparable_key)
        .collect::<Result<HashSet<_>>>()?;
    let mut kept = Vec::with_capacity(current.len());
    for item in current {
        if !doomed.contains(&comparable_key(&item)?) {
            kept.push(item);
        }
    }
    Ok(kept)
}

/// Removes repeated scalars (the order is settled by the normalisation that follows).
fn deduplicate_scalars(items: Vec<Value>) -> Result<Vec<Value>> {
    let mut seen = HashSet::new();
    let mut unique = Vec::with_capacity(items.len());
    for item in items {
        if seen.insert(comparable_key(&item)?) {
            unique.push(item);
        }
    }
    Ok(unique)
}

/// Upstream `partitionPrimitivesByPresentInList` / `partitionMapsByPresentInList`: splits
/// `merged` into the items present in `by` and the server-only rest.
fn partition(merged: Vec<Value>, by: &[Value], key: &str) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut present = Vec::with_capacity(merged.len());
    let mut server_only = Vec::with_capacity(merged.len());
    if key.is_empty() {
        let wanted = by
            .iter()
            .map(comparable_key)
            .collect::<Result<HashSet<_>>>()?;
        for item in merged {
            if wanted.contains(&comparable_key(&item)?) {
                present.push(item);
            } else {
                server_only.push(item);
            }
        }
    } else {
        let index = KeyIndex::new(by, key);
        for item in merged {
            let Value::Object(map) = &item else {
                return Err(bad_arg_type(GO_MAP, &item));
            };
            let value = map.get(key).ok_or_else(|| no_merge_key(map, key))?;
            if index.find(value)?.is_some() {
                present.push(item);
            } else {
                server_only.push(item);
            }
        }
    }
    Ok((present, server_only))
}

/// Upstream `normalizeElementOrder`: sorts the patch items by `patch_order` and the
/// server-only items by `server_order`, then interleaves them.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: &str,
    kind: GoType,
) -> Result<Vec<Value>> {
    let patch_items = normalize_slice_order(patch_items, patch_order, key, kind)?;
    let server_only = normalize_slice_order(server_only, server_order, key, kind)?;
    merge_sorted_slice(server_only, patch_items, server_order, key, kind)
}

/// Upstream `normalizeSliceOrder`: stable sort by position in `order`, with items marked
/// `$patch: delete` moved to the end.
fn normalize_slice_order(
    items: Vec<Value>,
    order: &[Value],
    key: &str,
    kind: GoType,
) -> Result<Vec<Value>> {
    let (items, to_delete) = if kind == GoType::Map {
        for item in items.iter().chain(order) {
            let Value::Object(map) = item else {
                return Err(bad_arg_type(GO_MAP, item));
            };
            if !map.contains_key(key) {
                return Err(no_merge_key(map, key));
            }
        }
        items.into_iter().partition(|item| {
            item.get(DIRECTIVE_MARKER).and_then(Value::as_str) != Some(DELETE_DIRECTIVE)
        })
    } else {
        (items, Vec::new())
    };
    let positions = Positions::new(order, key, kind);
    let mut keyed = items
        .into_iter()
        .map(|item| Ok((positions.of(&item)?, item)))
        .collect::<Result<Vec<(Option<usize>, Value)>>>()?;
    // Upstream's less: by position when both are listed, otherwise "less".
    gosort::stable_sort(&mut keyed, &mut |a, b| match (a.0, b.0) {
        (Some(i), Some(j)) => i < j,
        _ => true,
    });
    let mut sorted: Vec<Value> = keyed.into_iter().map(|(_, item)| item).collect();
    sorted.extend(to_delete);
    Ok(sorted)
}

/// Upstream `mergeSortedSlice`: inserts the server-only items (`left`) among the patch items
/// (`right`) by their live order, keeping the relative order of both.
fn merge_sorted_slice(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    key: &str,
    kind: GoType,
) -> Result<Vec<Value>> {
    let positions = Positions::new(server_order, key, kind);
    let left_positions = left
        .iter()
        .map(|item| positions.of(item))
        .collect::<Result<Vec<_>>>()?;
    let right_positions = right
        .iter()
        .map(|item| positions.of(item))
        .collect::<Result<Vec<_>>>()?;
    let mut merged = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().zip(left_positions).peekable();
    let mut right = right.into_iter().zip(right_positions).peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((_, l)), Some((_, r))) => matches!((l, r), (Some(l), Some(r)) if l < r),
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some((item, _)) = next {
            merged.push(item);
        }
    }
    Ok(merged)
}

/// The type of a decoded JSON value in Go (`k8s.io/apimachinery/pkg/util/json` decodes
/// integral numbers to int64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GoType {
    Nil,
    Bool,
    Int64,
    Float64,
    String,
    Slice,
    Map,
}

const GO_MAP: &str = "map[string]interface {}";
const GO_SLICE: &str = "[]interface {}";

fn go_type(value: &Value) -> GoType {
    match value {
        Value::Null => GoType::Nil,
        Value::Bool(_) => GoType::Bool,
        Value::Number(n) if n.is_i64() => GoType::Int64,
        Value::Number(_) => GoType::Float64,
        Value::String(_) => GoType::String,
        Value::Array(_) => GoType::Slice,
        Value::Object(_) => GoType::Map,
    }
}

fn go_type_name(value: &Value) -> &'static str {
    match go_type(value) {
        GoType::Nil => "<nil>",
        GoType::Bool => "bool",
        GoType::Int64 => "int64",
        GoType::Float64 => "float64",
        GoType::String => "string",
        GoType::Slice => GO_SLICE,
        GoType::Map => GO_MAP,
    }
}

/// Upstream `sliceElementType`: all items of all lists must share one non-list type.
fn slice_element_type(lists: &[&[Value]]) -> Result<GoType> {
    let mut kind: Option<GoType> = None;
    for list in lists {
        for item in list.iter() {
            let current = go_type(item);
            match kind {
                None => {
                    match current {
                        GoType::Slice => return Err(invalid(ERR_LIST_OF_LISTS)),
                        GoType::Nil => return Err(invalid("list items must not be null")),
                        _ => {}
                    }
                    kind = Some(current);
                }
                Some(previous) if previous != current => {
                    let shown: Vec<String> = lists.iter().map(|l| go_fmt_list(l)).collect();
                    return Err(invalid(format!(
                        "list element types are not identical: [{}]",
                        shown.join(" ")
                    )));
                }
                Some(_) => {}
            }
        }
    }
    kind.ok_or_else(|| invalid("no elements in any of the given slices"))
}

/// Go's `==` on two decoded JSON values: false across types, a runtime error for two maps
/// or two lists.
fn go_equal(left: &Value, right: &Value) -> Result<bool> {
    let kind = go_type(left);
    if kind != go_type(right) {
        return Ok(false);
    }
    match kind {
        GoType::Map | GoType::Slice => Err(uncomparable(left)),
        _ => Ok(left == right),
    }
}

fn uncomparable(value: &Value) -> SmpError {
    invalid(format!(
        "runtime error: comparing uncomparable type {}",
        go_type_name(value)
    ))
}

/// A hashable stand-in for a comparable (scalar) value; equal keys ⇔ Go `==`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ScalarKey {
    Nil,
    Bool(bool),
    Int(i64),
    /// Bits of the float, with -0 folded into 0.
    Float(u64),
    Str(String),
}

fn scalar_key(value: &Value) -> Option<ScalarKey> {
    Some(match value {
        Value::Null => ScalarKey::Nil,
        Value::Bool(b) => ScalarKey::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ScalarKey::Int(i),
            None => {
                let f = n.as_f64().unwrap_or(0.0);
                ScalarKey::Float(if f == 0.0 { 0 } else { f.to_bits() })
            }
        },
        Value::String(s) => ScalarKey::Str(s.clone()),
        Value::Array(_) | Value::Object(_) => return None,
    })
}

/// The key of a value that must be comparable (Go would panic on a map or list).
fn comparable_key(value: &Value) -> Result<ScalarKey> {
    scalar_key(value).ok_or_else(|| uncomparable(value))
}

/// The key of a candidate value: maps and lists never equal a comparable value.
fn lookup_key(value: &Value) -> Option<ScalarKey> {
    scalar_key(value)
}

/// Upstream `findMapInSliceBasedOnKeyValue`, as a lookup table: the first item whose merge
/// key equals a value, failing like upstream's scan when it meets a non-map item first.
struct KeyIndex {
    first: HashMap<ScalarKey, usize>,
    first_non_map: Option<usize>,
}

impl KeyIndex {
    fn new(items: &[Value], key: &str) -> Self {
        let mut first = HashMap::new();
        let mut first_non_map = None;
        for (position, item) in items.iter().enumerate() {
            match item {
                Value::Object(map) => {
                    if let Some(k) = map.get(key).and_then(lookup_key) {
                        first.entry(k).or_insert(position);
                    }
                }
                _ => {
                    first_non_map.get_or_insert(position);
                }
            }
        }
        Self {
            first,
            first_non_map,
        }
    }

    fn find(&self, value: &Value) -> Result<Option<usize>> {
        let found = self.first.get(&comparable_key(value)?).copied();
        match (found, self.first_non_map) {
            (Some(position), Some(bad)) if bad < position => Err(not_a_map(bad)),
            (None, Some(bad)) => Err(not_a_map(bad)),
            (found, _) => Ok(found),
        }
    }

    fn appended(&mut self, value: &Value, position: usize) {
        if let Some(k) = lookup_key(value) {
            self.first.entry(k).or_insert(position);
        }
    }
}

fn not_a_map(position: usize) -> SmpError {
    invalid(format!("value for key {position} is not a map"))
}

/// Upstream `index`, as a lookup table: the first position in a reference list of an item's
/// merge key (of the item itself for scalars). Missing and null keys are one Go `nil`.
struct Positions {
    first: HashMap<ScalarKey, usize>,
    key: String,
    kind: GoType,
}

impl Positions {
    fn new(order: &[Value], key: &str, kind: GoType) -> Self {
        let mut first = HashMap::new();
        for (position, item) in order.iter().enumerate() {
            if let Some(k) = Self::lookup_value(item, key, kind).and_then(lookup_key) {
                first.entry(k).or_insert(position);
            } else if Self::lookup_value(item, key, kind).is_none() {
                first.entry(ScalarKey::Nil).or_insert(position);
            }
        }
        Self {
            first,
            key: key.to_string(),
            kind,
        }
    }

    fn lookup_value<'v>(item: &'v Value, key: &str, kind: GoType) -> Option<&'v Value> {
        if kind == GoType::Map {
            item.as_object().and_then(|map| map.get(key))
        } else {
            Some(item)
        }
    }

    fn of(&self, item: &Value) -> Result<Option<usize>> {
        let k = match Self::lookup_value(item, &self.key, self.kind) {
            None => ScalarKey::Nil,
            Some(value) => comparable_key(value)?,
        };
        Ok(self.first.get(&k).copied())
    }
}

fn no_merge_key(map: &Map, key: &str) -> SmpError {
    invalid(format!(
        "map: {} does not contain declared merge key: {key}",
        go_fmt_map(map)
    ))
}

fn bad_arg_type(expected: &str, actual: &Value) -> SmpError {
    invalid(format!(
        "expected a {expected}, but received a {}",
        go_type_name(actual)
    ))
}

fn bad_patch_type(directive: &Value, map: &Map) -> SmpError {
    invalid(format!(
        "unknown patch type: {} in map: {}",
        go_fmt(directive),
        go_fmt_map(map)
    ))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's `%v` of a decoded JSON value, for error messages.
fn go_fmt(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => go_fmt_float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => go_fmt_list(items),
        Value::Object(map) => go_fmt_map(map),
    }
}

fn go_fmt_list(items: &[Value]) -> String {
    let parts: Vec<String> = items.iter().map(go_fmt).collect();
    format!("[{}]", parts.join(" "))
}

fn go_fmt_map(map: &Map) -> String {
    let parts: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}:{}", go_fmt(v)))
        .collect();
    format!("map[{}]", parts.join(" "))
}

/// Go's `%v` of a float64: shortest digits, exponent form below 1e-4 and from 1e6.
fn go_fmt_float(f: f64) -> String {
    let exponent = if f == 0.0 {
        0
    } else {
        f.abs().log10().floor() as i32
    };
    if (-4..6).contains(&exponent) {
        f.to_string()
    } else {
        let formatted = format!("{f:e}");
        match formatted.split_once('e') {
            Some((mantissa, exp)) => {
                let (sign, digits) = match exp.strip_prefix('-') {
                    Some(digits) => ('-', digits),
                    None => ('+', exp),
                };
                format!("{mantissa}e{sign}{digits:0>2}")
            }
            None => formatted,
        }
    }
}
