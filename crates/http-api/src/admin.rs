//! The admin API under `/admin`: who am I, projects, users and their roles, API tokens. Every
//! call is authenticated like any other request, and `app::auth` decides who may do it (hub
//! administrators for projects and users, project admins for roles, everyone for their own
//! tokens). A new token is in the answer once and never again. With access control off these
//! routes answer 404: there is nobody to manage.

use std::net::SocketAddr;
use std::time::Duration;

use access::{Grant, Identity, Role};
use app::Caller;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path};
use axum::routing::{delete, get, patch, post, put};
use serde_json::{Value as Json, json};

use crate::auth::{AuthMode, caller};
use crate::error::ApiError;
use crate::{ApiState, Reply};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/admin/whoami", get(whoami))
        .route("/admin/projects", get(projects).post(create_project))
        .route("/admin/projects/{id}", patch(update_project))
        .route("/admin/users", post(create_user))
        .route("/admin/users/{id}/roles/{project}", put(set_role).delete(remove_role))
        .route("/admin/tokens", post(create_token))
        .route("/admin/tokens/{id}", delete(revoke_token))
        .route("/admin/audit", get(audit))
        .route("/admin/retention", get(retention_policies))
        .route("/admin/retention/run", post(run_retention))
        .route("/admin/retention/{scope}/{id}", put(set_retention).delete(clear_retention))
}

/// `{scope}/{id}` of a retention route: `projects`, `datastreams` or `multi-datastreams`.
fn retention_scope(scope: &str, id: i64) -> Result<store::statistics::RetentionScope, ApiError> {
    use store::statistics::RetentionScope;
    match scope {
        "projects" => Ok(RetentionScope::Project(id)),
        "datastreams" => Ok(RetentionScope::Datastream(id)),
        "multi-datastreams" => Ok(RetentionScope::MultiDatastream(id)),
        other => Err(ApiError::new(
            404,
            "not_found",
            format!("`{other}` is no retention scope; use projects, datastreams or multi-datastreams"),
        )),
    }
}

fn policy_json(policy: &store::statistics::RetentionPolicy) -> Json {
    json!({
        "scope": app::retention::scope_json(policy.scope),
        "rawDays": policy.raw_days,
        "rollupDays": policy.rollup_days,
        "updatedAt": policy.updated_at.to_string(),
    })
}

/// A number of days, or null (for ever).
fn days(map: &serde_json::Map<String, Json>, key: &str) -> Result<Option<u32>, ApiError> {
    match map.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(value) => value.as_u64().and_then(|d| u32::try_from(d).ok()).map(Some).ok_or_else(|| {
            ApiError::new(400, "invalid_property", format!("`{key}` must be a whole number of days, or null"))
        }),
    }
}

/// `GET /admin/retention`: the policies the caller administers.
async fn retention_policies(admin: Admin) -> Reply {
    answer(
        async {
            let policies = admin.app.retention_policies(&admin.caller).await?;
            Ok(reply(200, json!({"value": policies.iter().map(policy_json).collect::<Vec<_>>()})))
        }
        .await,
    )
}

/// `PUT /admin/retention/{scope}/{id}` with `{"rawDays": 30, "rollupDays": 3650}`.
async fn set_retention(admin: Admin, Path((scope, id)): Path<(String, i64)>, bytes: Bytes) -> Reply {
    answer(
        async {
            let scope = retention_scope(&scope, id)?;
            let map = body(&bytes)?;
            if let Some(key) = map.keys().find(|k| !["rawDays", "rollupDays"].contains(&k.as_str())) {
                return Err(ApiError::new(400, "invalid_property", format!("unknown property `{key}`")));
            }
            let policy = admin
                .app
                .set_retention(&admin.caller, scope, days(&map, "rawDays")?, days(&map, "rollupDays")?)
                .await?;
            Ok(reply(200, policy_json(&policy)))
        }
        .await,
    )
}

/// `DELETE /admin/retention/{scope}/{id}`.
async fn clear_retention(admin: Admin, Path((scope, id)): Path<(String, i64)>) -> Reply {
    answer(
        async {
            admin.app.clear_retention(&admin.caller, retention_scope(&scope, id)?).await?;
            Ok(Reply::empty(204))
        }
        .await,
    )
}

/// `POST /admin/retention/run`: applies every policy now (hub administrators).
async fn run_retention(admin: Admin) -> Reply {
    answer(
        async {
            if !admin.caller.principal.hub_admin {
                return Err(ApiError::new(403, "forbidden", "only hub administrators may run retention"));
            }
            let report = admin.app.apply_retention(model::Instant::now()).await?;
            Ok(reply(
                200,
                json!({"series": report.series, "observationsDeleted": report.observations_deleted,
                       "rollupsDeleted": report.rollups_deleted}),
            ))
        }
        .await,
    )
}

/// `GET /admin/audit?after=<id>&limit=<n>`: the audit log, oldest first.
async fn audit(admin: Admin, axum::extract::RawQuery(query): axum::extract::RawQuery) -> Reply {
    answer(
        async {
            let Admin { caller, app, .. } = admin;
            let mut after = 0;
            let mut limit = 1000;
            for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let number = value
                    .parse::<i64>()
                    .map_err(|_| ApiError::new(400, "invalid_parameter", format!("`{key}` must be a number")))?;
                match key {
                    "after" => after = number,
                    "limit" => limit = number,
                    _ => return Err(ApiError::new(400, "invalid_parameter", format!("unknown parameter `{key}`"))),
                }
            }
            let entries = app.audit_entries(&caller, after, limit).await?;
            let value: Vec<Json> = entries
                .iter()
                .map(|e| {
                    json!({"id": e.id, "at": e.at.to_string(), "actor": e.actor, "event": e.event,
                       "detail": serde_json::from_str::<Json>(&e.detail).unwrap_or(Json::Null), "hash": e.hash})
                })
                .collect();
            Ok(reply(200, json!({"value": value})))
        }
        .await,
    )
}

/// An admin request: the authenticator and the caller (authenticated with the transport it
/// came over), or 404 when access control is off.
struct Admin {
    auth: std::sync::Arc<app::auth::Authenticator>,
    caller: Caller,
    app: app::App,
}

impl axum::extract::FromRequestParts<ApiState> for Admin {
    type Rejection = Reply;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &ApiState) -> Result<Admin, Reply> {
        let AuthMode::Required(auth) = &state.auth else {
            return Err(ApiError::new(
                404,
                "access_control_off",
                "access control is off (--auth off): there is nothing to manage",
            )
            .reply());
        };
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let transport = parts.extensions.get::<crate::auth::Transport>();
        let caller = caller(state, peer, &parts.headers, transport).await.map_err(|e| e.reply())?;
        Ok(Admin { auth: auth.clone(), caller, app: state.app.clone() })
    }
}

pub(crate) fn body(bytes: &Bytes) -> Result<serde_json::Map<String, Json>, ApiError> {
    match serde_json::from_slice::<Json>(bytes) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::new(400, "invalid_json", "the body must be a JSON object")),
        Err(e) => Err(ApiError::new(400, "invalid_json", format!("the body is not JSON: {e}"))),
    }
}

pub(crate) fn text(map: &serde_json::Map<String, Json>, key: &str) -> Result<Option<String>, ApiError> {
    match map.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::new(400, "invalid_property", format!("`{key}` must be a string"))),
    }
}

pub(crate) fn flag(map: &serde_json::Map<String, Json>, key: &str) -> Result<bool, ApiError> {
    match map.get(key) {
        None | Some(Json::Null) => Ok(false),
        Some(Json::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::new(400, "invalid_property", format!("`{key}` must be true or false"))),
    }
}

fn role(value: Option<&Json>) -> Result<Role, ApiError> {
    value
        .and_then(Json::as_str)
        .and_then(Role::parse)
        .ok_or_else(|| ApiError::new(400, "invalid_role", "`role` must be one of viewer, contributor, editor, admin"))
}

pub(crate) fn reply(status: u16, value: Json) -> Reply {
    Reply::json(status, value.to_string().into_bytes())
}

pub(crate) fn answer(result: Result<Reply, ApiError>) -> Reply {
    result.unwrap_or_else(|e| e.reply())
}

async fn whoami(admin: Admin) -> Reply {
    answer(
        async {
            let p = &admin.caller.principal;
            let identity = match &p.identity {
                Identity::Anonymous => json!({"kind": "anonymous"}),
                Identity::User { id, name } => json!({"kind": "user", "id": id, "name": name}),
                Identity::Token { id, user, .. } => json!({"kind": "token", "id": id, "user": user}),
                Identity::Device(device) => json!({
                    "kind": "device", "urn": device.urn, "project": device.project, "thing": device.thing,
                    "admitted": device.admission == access::Admission::Admitted,
                    "refusal": p.refusal(),
                }),
                Identity::Server => json!({"kind": "server"}),
            };
            let roles: Vec<Json> =
                p.grants.iter().map(|g| json!({"project": g.project, "role": g.role.name()})).collect();
            Ok(reply(200, json!({"identity": identity, "hubAdmin": p.hub_admin, "roles": roles})))
        }
        .await,
    )
}

fn project_json(p: &store::ProjectRecord) -> Json {
    json!({"id": p.id, "name": p.name, "openData": p.open_data})
}

async fn projects(admin: Admin) -> Reply {
    answer(
        async {
            let Admin { auth, caller, .. } = admin;
            let projects = auth.projects(&caller).await?;
            Ok(reply(200, json!({"value": projects.iter().map(project_json).collect::<Vec<_>>()})))
        }
        .await,
    )
}

async fn create_project(admin: Admin, bytes: Bytes) -> Reply {
    answer(
        async {
            let Admin { auth, caller, .. } = admin;
            let map = body(&bytes)?;
            let name =
                text(&map, "name")?.ok_or_else(|| ApiError::new(400, "missing_property", "`name` is required"))?;
            let project = auth.create_project(&caller, name, flag(&map, "openData")?).await?;
            Ok(reply(201, project_json(&project)))
        }
        .await,
    )
}

async fn update_project(admin: Admin, Path(id): Path<i64>, bytes: Bytes) -> Reply {
    answer(
        async {
            let Admin { auth, caller, .. } = admin;
            let map = body(&bytes)?;
            let open_data = match map.get("openData") {
                Some(Json::Bool(b)) => *b,
                _ => {
                    return Err(ApiError::new(
                        400,
                        "invalid_property",
                        "`openData` (true or false) is what can change",
                    ));
                }
            };
            auth.set_open_data(&caller, id, open_data).await?;
            Ok(Reply::empty(204))
        }
        .await,
    )
}

async fn create_user(admin: Admin, bytes: Bytes) -> Reply {
    answer(
        async {
            let Admin { auth, caller, .. } = admin;
            let map = body(&bytes)?;
            let name =
                text(&map, "name")?.ok_or_else(|| ApiError::new(400, "missing_property", "`name` is required"))?;
            let id = auth.create_user(&caller, name.clone(), text(&map, "password")?, flag(&map, "hubAdmin")?).await?;
            Ok(reply(201, json!({"id": id, "name": name})))
        }
        .await,
    )
}

async fn set_role(admin: Admin, Path((user, project)): Path<(i64, i64)>, bytes: Bytes) -> Reply {
    answer(
        async {
            let Admin { auth, caller, .. } = admin;
            let map = body(&bytes)?;
            auth.set_role(&caller, user, project, Some(role(map.get("role"))?)).await?;
            Ok(Reply::empty(204))
        }
        .await,
    )
}

async fn remove_role(admin: Admin, Path((user, project)): Path<(i64, i64)>) -> Reply {
    answer(
        async {
            let Admin { auth, caller, .. } = admin;
            auth.set_role(&caller, user, project, None).await?;
            Ok(Reply::empty(204))
        }
        .await,
    )
}

async fn create_token(admin: Admin, bytes: Bytes) -> Reply {
    answer(
        async {
            let Admin { auth, caller, .. } = admin;
            let map = body(&bytes)?;
            let label =
                text(&map, "label")?.ok_or_else(|| ApiError::new(400, "missing_property", "`label` is required"))?;
            let user = match map.get("user") {
                None | Some(Json::Null) => None,
                Some(value) => {
                    Some(value.as_i64().ok_or_else(|| ApiError::new(400, "invalid_property", "`user` is a user id"))?)
                }
            };
            let grants = match map.get("grants") {
                None | Some(Json::Null) => None,
                Some(Json::Array(items)) => Some(
                    items
                        .iter()
                        .map(|item| {
                            let project = item.get("project").and_then(Json::as_i64).ok_or_else(|| {
                                ApiError::new(400, "invalid_property", "each grant names a `project` id and a `role`")
                            })?;
                            Ok(Grant { project, role: role(item.get("role"))? })
                        })
                        .collect::<Result<Vec<_>, ApiError>>()?,
                ),
                Some(_) => return Err(ApiError::new(400, "invalid_property", "`grants` is a list of {project, role}")),
            };
            let valid_for = match map.get("expiresInSeconds") {
                None | Some(Json::Null) => None,
                Some(value) => Some(Duration::from_secs(value.as_u64().filter(|s| *s > 0).ok_or_else(|| {
                    ApiError::new(400, "invalid_property", "`expiresInSeconds` is a positive number of seconds")
                })?)),
            };
            let (id, secret) = auth.create_token(&caller, user, label, grants, valid_for).await?;
            Ok(reply(201, json!({"id": id, "token": secret.as_str()})))
        }
        .await,
    )
}

async fn revoke_token(admin: Admin, Path(id): Path<i64>) -> Reply {
    answer(
        async {
            let Admin { auth, caller, .. } = admin;
            auth.revoke_token(&caller, id).await?;
            Ok(Reply::empty(204))
        }
        .await,
    )
}
