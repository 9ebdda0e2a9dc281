//! An OpenAPI 3.0 description of the API, generated from the model's schema so it cannot drift
//! from what the server does. Served at `/openapi.json`.

use model::{EntityType, PropertyKind};
use serde_json::{Map, Value as Json, json};

use crate::root::CONFORMANCE;

fn schema_of(kind: PropertyKind) -> Json {
    match kind {
        PropertyKind::Text => json!({"type": "string"}),
        PropertyKind::Object => json!({"type": "object"}),
        PropertyKind::Json | PropertyKind::Result | PropertyKind::Geometry => json!({}),
        PropertyKind::Instant => json!({"type": "string", "format": "date-time"}),
        PropertyKind::Interval => json!({"type": "string", "description": "ISO 8601 interval start/end"}),
        PropertyKind::InstantOrInterval => {
            json!({"type": "string", "description": "ISO 8601 instant or interval start/end"})
        }
    }
}

fn entity_schema(entity: EntityType) -> Json {
    let mut properties = Map::new();
    properties.insert("@iot.id".into(), json!({"type": "integer", "readOnly": true}));
    properties.insert("@iot.selfLink".into(), json!({"type": "string", "readOnly": true}));
    let mut required = Vec::new();
    for p in entity.properties() {
        let mut schema = schema_of(p.kind);
        if p.derived {
            schema["readOnly"] = json!(true);
        }
        properties.insert(p.name.into(), schema);
        if p.required {
            required.push(p.name);
        }
    }
    for nav in entity.navigations() {
        let target = json!({"$ref": format!("#/components/schemas/{}", nav.target.name())});
        let schema = if nav.many { json!({"type": "array", "items": target}) } else { target };
        properties.insert(nav.name.into(), schema);
        properties.insert(format!("{}@iot.navigationLink", nav.name), json!({"type": "string", "readOnly": true}));
    }
    json!({"type": "object", "properties": properties, "required": required})
}

/// The OpenAPI document for a server whose service root is `base`.
pub fn document(base: &str) -> Json {
    let options = ["$filter", "$select", "$expand", "$orderby", "$top", "$skip", "$count", "$resultFormat"];
    let query: Vec<Json> = options
        .iter()
        .map(|o| json!({"name": o, "in": "query", "required": false, "schema": {"type": "string"}}))
        .collect();
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}});
    let error = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for entity in EntityType::ALL {
        let set = entity.set_name();
        let one = json!({"$ref": format!("#/components/schemas/{}", entity.name())});
        let body = json!({"required": true, "content": {"application/json": {"schema": one}}});
        let ok = |status: &str, what: &str| json!({status: {"description": what, "content": {"application/json": {"schema": one}}}});
        let mut collection_responses = ok("200", "a page of entities");
        collection_responses["400"] = error.clone();
        let mut created = ok("201", "created; Location names it");
        created["400"] = error.clone();
        paths.insert(
            format!("/{set}"),
            json!({
                "get": {"summary": format!("List {set}"), "parameters": query, "responses": collection_responses},
                "post": {"summary": format!("Create a {} (deep insert allowed)", entity.name()), "requestBody": body, "responses": created},
            }),
        );
        let mut found = ok("200", "the entity");
        found["404"] = error.clone();
        paths.insert(
            format!("/{set}({{id}})"),
            json!({
                "parameters": [id],
                "get": {"summary": format!("Read a {}", entity.name()), "parameters": query, "responses": found},
                "patch": {"summary": "Update (merge, or JSON Patch with application/json-patch+json)", "requestBody": body, "responses": found},
                "put": {"summary": "Replace", "requestBody": body, "responses": found},
                "delete": {"summary": "Delete, with the SensorThings cascades", "responses": {"200": {"description": "deleted"}, "404": error}},
            }),
        );
        schemas.insert(entity.name().into(), entity_schema(entity));
    }
    paths.insert(
        "/$batch".into(),
        json!({"post": {"summary": "Batch requests (JSON format, atomicity groups)", "responses": {"200": {"description": "responses"}}}}),
    );
    paths.insert(
        "/CreateObservations".into(),
        json!({"post": {"summary": "Create Observations in the Data Array format", "responses": {"201": {"description": "one self link per row, or \"error\" followed by the reason the row was rejected"}}}}),
    );
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "properties": {
            "code": {"type": "integer"}, "type": {"type": "string"}, "error": {"type": "string"},
            "message": {"type": "string"}, "option": {"type": "string"}, "position": {"type": "integer"}}}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Thingbase SensorThings API", "version": "1.1",
                 "description": format!("OGC SensorThings API v1.1. Conformance: {}", CONFORMANCE.join(", "))},
        "servers": [{"url": base}],
        "paths": paths,
        "components": {"schemas": schemas},
    })
}
