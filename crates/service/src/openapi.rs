//! `/openapi.json`, generated from the proto descriptors and each service's route table, so the
//! document cannot drift from the contracts: every body schema is the proto3 JSON mapping of its
//! message (original field names, 64-bit integers as decimal strings, enums by name, unknown
//! fields refused).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::OnceLock,
};

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::router::{Route, RouteStatus};

const ERROR_ENVELOPE: &str = "openagents.common.v1.ErrorEnvelope";

fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(oa_proto::DESCRIPTOR_SET).ok())
        .as_ref()
}

/// The OpenAPI 3.0 document of a service.
pub fn document(service: &str, version: &str, routes: &[Route]) -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut wanted: BTreeSet<String> = BTreeSet::from([ERROR_ENVELOPE.to_owned()]);
    for r in routes {
        let mut op = Map::new();
        op.insert("summary".into(), json!(r.summary));
        op.insert("operationId".into(), json!(operation_id(r)));
        let params: Vec<Value> = path_params(r.path)
            .into_iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 128}}))
            .collect();
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(req) = r.request {
            wanted.insert(req.to_owned());
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": {"$ref": schema_ref(req)}}}}),
            );
        }
        let mut responses = Map::new();
        let error = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": schema_ref(ERROR_ENVELOPE)}}}});
        match (r.status, r.response) {
            (RouteStatus::NotSupported, _) => {
                responses.insert("501".into(), json!({"description": "not supported in this version", "content": {"application/json": {"schema": {"$ref": schema_ref(ERROR_ENVELOPE)}}}}));
            }
            (RouteStatus::Built, Some(resp)) => {
                wanted.insert(resp.to_owned());
                responses.insert("200".into(), json!({"description": "success", "content": {"application/json": {"schema": {"$ref": schema_ref(resp)}}}}));
            }
            (RouteStatus::Built, None) => {
                responses.insert("200".into(), json!({"description": "success"}));
            }
        }
        responses.insert("default".into(), error);
        op.insert("responses".into(), Value::Object(responses));
        let scopes = r.scopes();
        if !scopes.is_empty() {
            // Alternatives: a token holding any one of them is let in.
            let any_of: Vec<Value> = scopes.iter().map(|s| json!({"bearer": [s]})).collect();
            op.insert("security".into(), Value::Array(any_of));
        }
        let path = r.path.to_owned();
        paths
            .entry(path)
            .or_default()
            .insert(r.method.to_ascii_lowercase(), Value::Object(op));
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": format!("{service} API"), "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas(&wanted),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    })
}

fn operation_id(r: &Route) -> String {
    let mut id = r.method.to_ascii_lowercase();
    for c in r.path.chars() {
        id.push(if c.is_ascii_alphanumeric() { c } else { '_' });
    }
    id
}

fn path_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect()
}

fn schema_ref(full_name: &str) -> String {
    format!("#/components/schemas/{full_name}")
}

/// Schemas for `wanted` messages and every message they reach.
fn schemas(wanted: &BTreeSet<String>) -> Value {
    let mut out = Map::new();
    let Some(pool) = pool() else {
        return Value::Object(out);
    };
    let mut todo: Vec<String> = wanted.iter().cloned().collect();
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(msg) = pool.get_message_by_name(&name) else {
            continue;
        };
        let schema = message_schema(&msg, &mut todo);
        out.insert(name, schema);
    }
    Value::Object(out)
}

fn message_schema(msg: &MessageDescriptor, todo: &mut Vec<String>) -> Value {
    if msg.full_name() == "google.protobuf.Struct" {
        return json!({"type": "object", "additionalProperties": true});
    }
    let mut props = Map::new();
    for field in msg.fields() {
        let schema = if field.is_map() {
            let value_kind = match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other,
            };
            json!({"type": "object", "additionalProperties": kind_schema(&value_kind, todo)})
        } else if field.is_list() {
            json!({"type": "array", "items": kind_schema(&field.kind(), todo)})
        } else {
            kind_schema(&field.kind(), todo)
        };
        props.insert(field.name().to_owned(), schema);
    }
    json!({"type": "object", "properties": props, "additionalProperties": false})
}

fn kind_schema(kind: &Kind, todo: &mut Vec<String>) -> Value {
    match kind {
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "minimum": 0, "maximum": 4_294_967_295_u64})
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "string", "pattern": "^-?[0-9]{1,19}$"})
        }
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "pattern": "^[0-9]{1,20}$"}),
        Kind::Enum(e) => {
            json!({"type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()})
        }
        Kind::Message(m) => {
            todo.push(m.full_name().to_owned());
            json!({"$ref": schema_ref(m.full_name())})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_routes_and_reachable_schemas() {
        let routes = [
            Route::built(
                "POST",
                "/v1/treasury/payments",
                "pay",
                Some("openagents.treasury.v1.CreatePaymentRequest"),
                Some("openagents.treasury.v1.PaymentResponse"),
                Some("treasury:pay"),
            ),
            Route::not_supported("GET", "/v1/things/{id}", "later"),
        ];
        let doc = document("treasury", "0.1.0", &routes);
        let schemas = &doc["components"]["schemas"];
        let req = &schemas["openagents.treasury.v1.CreatePaymentRequest"];
        assert_eq!(req["additionalProperties"], false);
        assert_eq!(req["properties"]["amount_msat"]["type"], "string");
        // Reached through PaymentResponse -> Receipt -> Struct.
        assert!(schemas.get("openagents.common.v1.Receipt").is_some());
        assert!(schemas.get("openagents.common.v1.ErrorEnvelope").is_some());
        assert_eq!(
            doc["paths"]["/v1/things/{id}"]["get"]["parameters"][0]["name"],
            "id"
        );
        assert!(
            doc["paths"]["/v1/things/{id}"]["get"]["responses"]
                .get("501")
                .is_some()
        );
    }
}
