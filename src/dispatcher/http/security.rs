//! The security log through the API: `GET /v1/namespaces/{ns}/security-events` (a namespace's
//! entries; `list webhookendpoints` there) and `GET /v1/security-events` (every entry, those of
//! no namespace included; `list webhookendpoints` in every namespace).
use axum::extract::{Path, Request, State};
use axum::Json;
use serde::Deserialize;

use super::auth::Access;
use super::error::ApiError;
use super::history::{page, paged_error, query, PageJson, PageParams};
use super::ApiState;
use crate::security::{SecurityKind, SecurityRecord};
use crate::store::SecurityQuery;

/// `?kind=&cursor=&limit=` (`kind` may repeat as a comma-separated list).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecurityParams {
    kind: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

fn kinds(param: Option<&str>) -> Result<Vec<SecurityKind>, ApiError> {
    param
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| {
            SecurityKind::parse(k).ok_or_else(|| {
                let known: Vec<&str> = SecurityKind::ALL.iter().map(|k| k.as_str()).collect();
                ApiError::field(
                    "invalid_field",
                    "kind",
                    format!("kind: `{k}` is not one of {}", known.join(", ")),
                )
            })
        })
        .collect()
}

async fn read(
    state: &ApiState,
    request: Request,
    namespace: Option<String>,
) -> Result<Json<PageJson<SecurityRecord>>, ApiError> {
    let params = query::<SecurityParams>(&request);
    let (parts, _) = request.into_parts();
    let access = Access::read_endpoints(namespace.as_deref().unwrap_or(""), None);
    state.reviewer.check(&parts.headers, access).await?;
    if let Some(namespace) = &namespace {
        state.served(namespace)?;
    }
    let params = params?;
    let page = page(&PageParams {
        endpoint: None,
        cursor: params.cursor,
        limit: params.limit,
    })?;
    let found = state
        .shared
        .store
        .security_events(SecurityQuery {
            namespace,
            kinds: kinds(params.kind.as_deref())?,
            page,
        })
        .await
        .map_err(paged_error)?;
    Ok(Json(PageJson::from_page(found)))
}

/// `GET /v1/namespaces/{ns}/security-events`.
pub async fn in_namespace(
    State(state): State<ApiState>,
    Path(namespace): Path<String>,
    request: Request,
) -> Result<Json<PageJson<SecurityRecord>>, ApiError> {
    read(&state, request, Some(namespace)).await
}

/// `GET /v1/security-events`.
pub async fn everywhere(
    State(state): State<ApiState>,
    request: Request,
) -> Result<Json<PageJson<SecurityRecord>>, ApiError> {
    read(&state, request, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_checked() {
        assert_eq!(kinds(None).unwrap(), vec![]);
        assert_eq!(
            kinds(Some("destination_refused, auth_failure_burst")).unwrap(),
            vec![
                SecurityKind::DestinationRefused,
                SecurityKind::AuthFailureBurst
            ]
        );
        let error = kinds(Some("nope")).unwrap_err().to_string();
        assert!(error.contains("`nope` is not one of"), "{error}");
    }
}
