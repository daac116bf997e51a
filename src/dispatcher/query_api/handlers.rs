//! The query API's reads: discovery, list, get and watch of `webhookdeliveries`,
//! `webhookdeadletters` and `webhookanalytics`, each authorized by a SubjectAccessReview for the
//! user the front proxy named (verb `get`, `list` or `watch` on the resource in the query group).
use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use jiff::{Timestamp, ToSpan};
use serde::Serialize;
use serde_json::{json, Value};

use super::status::QueryError;
use super::watch;
use super::QueryState;
use crate::api::selector;
use crate::query::fields::{FieldSelector, ANALYTICS_FIELDS, DEAD_LETTER_FIELDS, DELIVERY_FIELDS};
use crate::query::table::{self, IncludeObject, Printable};
use crate::query::{
    discovery, names, ObjectList, Resource, WebhookAnalytics, WebhookDeadLetter, WebhookDelivery,
};
use crate::runtime::access::{Access, Identity};
use crate::store::{
    AnalyticsQuery, AttemptScope, BucketWidth, DeliveryId, EndpointRef, PageRequest,
};

/// The page size when `limit` is not given, and the largest served: a list is always paged
/// (`metadata.continue`), as kubectl's `--chunk-size` (500 by default) expects.
pub const MAX_LIMIT: usize = 500;

/// What a list or watch was asked for.
struct ListRequest {
    fields: FieldSelector,
    labels: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    limit: usize,
    cursor: Option<String>,
    watch: bool,
    resource_version: Option<String>,
    timeout: Duration,
    include: IncludeObject,
}

fn parse_list(
    params: &HashMap<String, String>,
    supported: &[&str],
) -> Result<ListRequest, QueryError> {
    let get = |key: &str| {
        params
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let fields = FieldSelector::parse(get("fieldSelector").unwrap_or(""), supported)
        .map_err(QueryError::BadRequest)?;
    let labels = selector::parse(get("labelSelector").unwrap_or(""))
        .map_err(|e| QueryError::BadRequest(format!("labelSelector: {e}")))?;
    let limit = match get("limit") {
        None => MAX_LIMIT,
        Some(limit) => match limit.parse::<usize>() {
            Ok(0) => MAX_LIMIT,
            Ok(n) => n.min(MAX_LIMIT),
            Err(_) => {
                return Err(QueryError::BadRequest(format!(
                    "limit: must be a whole number, not `{limit}`"
                )))
            }
        },
    };
    let watch = matches!(get("watch"), Some("true" | "1"));
    let timeout = match get("timeoutSeconds") {
        None => Duration::from_secs(30 * 60),
        Some(seconds) => seconds
            .parse::<u64>()
            .map(|s| Duration::from_secs(s.min(60 * 60)))
            .map_err(|_| {
                QueryError::BadRequest(format!(
                    "timeoutSeconds: must be a whole number, not `{seconds}`"
                ))
            })?,
    };
    Ok(ListRequest {
        fields,
        labels,
        limit,
        cursor: get("continue").map(str::to_owned),
        watch,
        resource_version: get("resourceVersion").map(str::to_owned),
        timeout,
        include: IncludeObject::parse(get("includeObject")).map_err(QueryError::BadRequest)?,
    })
}

/// Whether the client asked for kubectl's Table (`Accept: application/json;as=Table;…`).
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// 403 unless the user may `verb` the resource (in `namespace`, or every namespace when empty).
async fn authorize(
    state: &QueryState,
    identity: &Identity,
    verb: &'static str,
    resource: Resource,
    namespace: &str,
    name: Option<&str>,
) -> Result<(), QueryError> {
    let access = Access::query(namespace, verb, resource.plural(), name);
    if state.reviewer.allows(identity, &access).await? {
        return Ok(());
    }
    let scope = if namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{namespace}\"")
    };
    let target = match name {
        Some(name) => format!(
            "{}.{} \"{name}\" is forbidden",
            resource.plural(),
            crate::query::GROUP
        ),
        None => format!("{}.{} is forbidden", resource.plural(), crate::query::GROUP),
    };
    Err(QueryError::Forbidden(format!(
        "{target}: User \"{}\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}",
        identity.username,
        resource.plural(),
        crate::query::GROUP
    )))
}

fn resource_of(plural: &str) -> Result<Resource, QueryError> {
    Resource::from_plural(plural).ok_or_else(|| {
        QueryError::NotFoundPath(format!(
            "the server could not find the requested resource `{plural}` (this group serves {})",
            Resource::ALL.map(|r| r.plural()).join(", ")
        ))
    })
}

/// `GET /apis`, `/apis/{group}`, `/apis/{group}/{version}`.
pub async fn group_list() -> Json<Value> {
    Json(discovery::api_group_list())
}
pub async fn group() -> Json<Value> {
    Json(discovery::api_group())
}
pub async fn resources() -> Json<Value> {
    Json(discovery::resource_list())
}

/// `GET …/v1alpha1/{resource}`: every namespace.
pub async fn list_all(
    State(state): State<QueryState>,
    Extension(identity): Extension<Identity>,
    Path(plural): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, QueryError> {
    list(state, identity, String::new(), plural, params, headers).await
}

/// `GET …/v1alpha1/namespaces/{ns}/{resource}`.
pub async fn list_namespaced(
    State(state): State<QueryState>,
    Extension(identity): Extension<Identity>,
    Path((namespace, plural)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, QueryError> {
    list(state, identity, namespace, plural, params, headers).await
}

async fn list(
    state: QueryState,
    identity: Identity,
    namespace: String,
    plural: String,
    params: HashMap<String, String>,
    headers: HeaderMap,
) -> Result<Response, QueryError> {
    let resource = resource_of(&plural)?;
    let supported = match resource {
        Resource::Deliveries => DELIVERY_FIELDS,
        Resource::DeadLetters => DEAD_LETTER_FIELDS,
        Resource::Analytics => ANALYTICS_FIELDS,
    };
    let request = parse_list(&params, supported)?;
    let verb = if request.watch { "watch" } else { "list" };
    authorize(&state, &identity, verb, resource, &namespace, None).await?;
    let table = wants_table(&headers);
    let now = Timestamp::now();
    match resource {
        Resource::Deliveries if request.watch => {
            let scope = delivery_scope(&namespace, &request.fields);
            let from = match request.resource_version.as_deref() {
                None | Some("0") => state.shared.store.last_attempt_seq().await?,
                Some(rv) => rv.parse::<i64>().map_err(|_| {
                    QueryError::BadRequest(format!(
                        "resourceVersion: `{rv}` is not one this API gave out (a whole number)"
                    ))
                })?,
            };
            let filter = move |d: &WebhookDelivery| {
                request.fields.matches(|f| d.field(f))
                    && selector::matches(
                        &request.labels,
                        d.metadata.labels.as_ref().unwrap_or(&Default::default()),
                    )
            };
            Ok(watch::deliveries(
                state.shared.store.clone(),
                scope,
                from,
                filter,
                watch::Format {
                    table,
                    include: request.include,
                },
                request.timeout,
            ))
        }
        _ if request.watch => Err(QueryError::MethodNotAllowed(format!(
            "{} cannot be watched; only webhookdeliveries can",
            resource.plural()
        ))),
        Resource::Deliveries => {
            let resource_version = state.shared.store.last_attempt_seq().await?.to_string();
            let scope = delivery_scope(&namespace, &request.fields);
            let page = state
                .shared
                .store
                .attempt_log(
                    scope,
                    PageRequest::after(request.cursor.clone(), request.limit),
                )
                .await?;
            let items: Vec<WebhookDelivery> = page
                .items
                .iter()
                .map(WebhookDelivery::from_attempt)
                .filter(|d| selected(&request, d.metadata.labels.as_ref(), |f| d.field(f)))
                .collect();
            respond(
                resource,
                items,
                &resource_version,
                page.next_cursor,
                table,
                request.include,
                now,
            )
        }
        Resource::DeadLetters => {
            if namespace.is_empty() {
                return Err(QueryError::BadRequest(
                    "webhookdeadletters are listed one namespace at a time: add -n NAMESPACE"
                        .to_owned(),
                ));
            }
            let endpoint = request.fields.equal_to("endpoint").map(str::to_owned);
            let page = state
                .shared
                .store
                .dead_letters(
                    &namespace,
                    endpoint.as_deref(),
                    PageRequest::after(request.cursor.clone(), request.limit),
                )
                .await?;
            let items: Vec<WebhookDeadLetter> = page
                .items
                .iter()
                .map(WebhookDeadLetter::from_dead_letter)
                .filter(|d| selected(&request, d.metadata.labels.as_ref(), |f| d.field(f)))
                .collect();
            respond(
                resource,
                items,
                &now.as_millisecond().to_string(),
                page.next_cursor,
                table,
                request.include,
                now,
            )
        }
        Resource::Analytics => {
            let mut endpoints: Vec<(String, String)> = state
                .shared
                .cache
                .endpoints
                .state()
                .iter()
                .filter_map(|e| Some((e.metadata.namespace.clone()?, e.metadata.name.clone()?)))
                .filter(|(ns, _)| namespace.is_empty() || *ns == namespace)
                .collect();
            endpoints.sort();
            let after = request.cursor.clone().unwrap_or_default();
            let mut items = Vec::new();
            let mut next = None;
            for (ns, name) in endpoints
                .into_iter()
                .filter(|(ns, n)| format!("{ns}/{n}") > after)
            {
                if items.len() == request.limit {
                    next = items.last().map(|a: &WebhookAnalytics| {
                        format!(
                            "{}/{}",
                            a.metadata.namespace.clone().unwrap_or_default(),
                            a.endpoint
                        )
                    });
                    break;
                }
                let analytics = analytics(&state, &ns, &name, now).await?;
                if selected(&request, analytics.metadata.labels.as_ref(), |f| {
                    analytics.field(f)
                }) {
                    items.push(analytics);
                }
            }
            respond(
                resource,
                items,
                &now.as_millisecond().to_string(),
                next,
                table,
                request.include,
                now,
            )
        }
    }
}

fn selected(
    request: &ListRequest,
    labels: Option<&std::collections::BTreeMap<String, String>>,
    field: impl Fn(&str) -> Option<String>,
) -> bool {
    request.fields.matches(field)
        && selector::matches(&request.labels, labels.unwrap_or(&Default::default()))
}

/// The narrowest store read a list of deliveries needs.
fn delivery_scope(namespace: &str, fields: &FieldSelector) -> AttemptScope {
    match (namespace, fields.equal_to("endpoint")) {
        ("", _) => AttemptScope::All,
        (ns, Some(endpoint)) => AttemptScope::Endpoint(EndpointRef::new(ns, endpoint)),
        (ns, None) => AttemptScope::Namespace(ns.to_owned()),
    }
}

fn respond<T: Printable + Serialize>(
    resource: Resource,
    items: Vec<T>,
    resource_version: &str,
    next: Option<String>,
    table: bool,
    include: IncludeObject,
    now: Timestamp,
) -> Result<Response, QueryError> {
    if table {
        return Ok(Json(table::table(
            &items,
            include,
            resource_version,
            next.as_deref(),
            now,
        ))
        .into_response());
    }
    Ok(Json(ObjectList::new(
        resource,
        items,
        resource_version.to_owned(),
        next,
    ))
    .into_response())
}

/// `GET …/v1alpha1/namespaces/{ns}/{resource}/{name}`.
pub async fn get_one(
    State(state): State<QueryState>,
    Extension(identity): Extension<Identity>,
    Path((namespace, plural, name)): Path<(String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, QueryError> {
    let resource = resource_of(&plural)?;
    authorize(&state, &identity, "get", resource, &namespace, Some(&name)).await?;
    let include = IncludeObject::parse(params.get("includeObject").map(String::as_str))
        .map_err(QueryError::BadRequest)?;
    let table = wants_table(&headers);
    let now = Timestamp::now();
    let not_found = || QueryError::NotFound {
        resource: resource.plural().to_owned(),
        name: name.clone(),
    };
    let one = |object: Value, row: Value| -> Response {
        if table {
            Json(row).into_response()
        } else {
            Json(object).into_response()
        }
    };
    match resource {
        Resource::Deliveries => {
            let (endpoint, delivery_id, attempt) =
                names::parse_delivery(&name).ok_or_else(not_found)?;
            let history = state
                .shared
                .store
                .delivery_history(DeliveryId(delivery_id))
                .await?
                .filter(|h| h.delivery.endpoint == EndpointRef::new(&namespace, endpoint))
                .ok_or_else(not_found)?;
            let entry = history
                .attempts
                .iter()
                .find(|a| a.record.attempt == attempt)
                .ok_or_else(not_found)?;
            let object = WebhookDelivery::from_attempt(entry);
            let row = table::table(
                std::slice::from_ref(&object),
                include,
                &entry.seq.to_string(),
                None,
                now,
            );
            Ok(one(json!(object), row))
        }
        Resource::DeadLetters => {
            let (endpoint, delivery_id) = names::parse_dead_letter(&name).ok_or_else(not_found)?;
            let history = state
                .shared
                .store
                .delivery_history(DeliveryId(delivery_id))
                .await?
                .filter(|h| {
                    h.delivery.endpoint == EndpointRef::new(&namespace, endpoint)
                        && h.delivery.state == crate::store::DeliveryState::DeadLettered
                })
                .ok_or_else(not_found)?;
            let object = WebhookDeadLetter::from_dead_letter(&history);
            let row = table::table(std::slice::from_ref(&object), include, "0", None, now);
            Ok(one(json!(object), row))
        }
        Resource::Analytics => {
            state
                .shared
                .cache
                .endpoint(&namespace, &name)
                .ok_or_else(not_found)?;
            let object = analytics(&state, &namespace, &name, now).await?;
            let row = table::table(std::slice::from_ref(&object), include, "0", None, now);
            Ok(one(json!(object), row))
        }
    }
}

/// An endpoint's analytics: its stats and the last 24 hours by hour.
async fn analytics(
    state: &QueryState,
    namespace: &str,
    name: &str,
    now: Timestamp,
) -> Result<WebhookAnalytics, QueryError> {
    let endpoint = EndpointRef::new(namespace, name);
    let stats = state.shared.store.endpoint_stats(&endpoint, now).await?;
    // 24 whole hours: the current one and the 23 before it.
    let from = Timestamp::from_second(now.as_second().div_euclid(3600) * 3600)
        .and_then(|hour| hour.checked_sub(23.hours()))
        .map_err(|e| QueryError::Internal(e.to_string()))?;
    let hourly = state
        .shared
        .store
        .analytics(AnalyticsQuery {
            endpoint,
            bucket: BucketWidth::Hour,
            from,
            to: now,
        })
        .await?;
    Ok(WebhookAnalytics::new(namespace, name, &stats, &hourly, now))
}

/// Any other path or method.
pub async fn not_found(uri: axum::http::Uri) -> QueryError {
    QueryError::NotFoundPath(format!(
        "the server could not find the requested resource ({})",
        uri.path()
    ))
}

/// Anything but GET on a resource: the API is read-only.
pub async fn read_only() -> QueryError {
    QueryError::MethodNotAllowed(
        "the query API is read-only: history changes only by deliveries, replays and retention"
            .to_owned(),
    )
}
