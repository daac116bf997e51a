//! What a user may see, asked of SubjectAccessReview for that user (answers cached for
//! `--auth-cache-seconds`).
use std::collections::BTreeSet;
use std::sync::Arc;

use kube::ResourceExt;

use super::error::PageError;
use super::user::User;
use super::Dashboard;
use crate::api::{WebhookEndpoint, WebhookSubscription};
use crate::dispatcher::http::auth::Access;

impl Dashboard {
    async fn allows(&self, user: &User, access: Access) -> Result<bool, PageError> {
        Ok(self.reviewer.allows(&user.identity, &access).await?)
    }

    /// Of `namespaces`, those where the user may `list` `resource`.
    async fn listable(
        &self,
        user: &User,
        namespaces: BTreeSet<String>,
        resource: &'static str,
    ) -> Result<BTreeSet<String>, PageError> {
        let mut allowed = BTreeSet::new();
        for namespace in namespaces {
            if self
                .allows(user, Access::new(&namespace, "list", resource, None))
                .await?
            {
                allowed.insert(namespace);
            }
        }
        Ok(allowed)
    }

    /// The endpoints the user may `get`: every one of a namespace where they may `list`
    /// endpoints, otherwise each one they may `get` by name. Sorted by namespace and name.
    pub async fn visible_endpoints(
        &self,
        user: &User,
    ) -> Result<Vec<Arc<WebhookEndpoint>>, PageError> {
        let mut endpoints = self.shared.cache.endpoints.state();
        endpoints.sort_by_key(|e| (e.namespace().unwrap_or_default(), e.name_any()));
        let namespaces: BTreeSet<String> = endpoints.iter().filter_map(|e| e.namespace()).collect();
        let listable = self.listable(user, namespaces, "webhookendpoints").await?;
        let mut visible = Vec::new();
        for endpoint in endpoints {
            let namespace = endpoint.namespace().unwrap_or_default();
            if listable.contains(&namespace)
                || self
                    .allows(
                        user,
                        Access::read_endpoints(&namespace, Some(&endpoint.name_any())),
                    )
                    .await?
            {
                visible.push(endpoint);
            }
        }
        Ok(visible)
    }

    /// The endpoint, if the user may `get` it; "not found" otherwise, so that a user without
    /// rights cannot tell an endpoint that exists from one that does not.
    pub async fn endpoint_for(
        &self,
        user: &User,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<WebhookEndpoint>, PageError> {
        let not_found = || {
            PageError::NotFound(format!(
                "WebhookEndpoint `{name}` in namespace `{namespace}` was not found, or you may not get it"
            ))
        };
        if !self
            .allows(user, Access::read_endpoints(namespace, Some(name)))
            .await?
        {
            return Err(not_found());
        }
        self.shared
            .cache
            .endpoint(namespace, name)
            .ok_or_else(not_found)
    }

    /// Whether the user may do `verb` on the endpoint (`update` for a test delivery).
    pub async fn may(
        &self,
        user: &User,
        verb: &'static str,
        namespace: &str,
        name: &str,
    ) -> Result<bool, PageError> {
        self.allows(
            user,
            Access::new(namespace, verb, "webhookendpoints", Some(name)),
        )
        .await
    }

    /// The namespaces (of those holding endpoints or subscriptions) where the user may `list`
    /// endpoints: where events and their payloads may be shown.
    pub async fn readable_namespaces(&self, user: &User) -> Result<BTreeSet<String>, PageError> {
        let mut namespaces: BTreeSet<String> = self
            .shared
            .cache
            .endpoints
            .state()
            .iter()
            .filter_map(|e| e.namespace())
            .collect();
        namespaces.extend(
            self.shared
                .cache
                .subscriptions
                .state()
                .iter()
                .filter_map(|s| s.namespace()),
        );
        self.listable(user, namespaces, "webhookendpoints").await
    }

    /// The subscriptions the user may `list`, per namespace.
    pub async fn visible_subscriptions(
        &self,
        user: &User,
    ) -> Result<Vec<Arc<WebhookSubscription>>, PageError> {
        let mut subscriptions = self.shared.cache.subscriptions.state();
        subscriptions.sort_by_key(|s| (s.namespace().unwrap_or_default(), s.name_any()));
        let namespaces: BTreeSet<String> =
            subscriptions.iter().filter_map(|s| s.namespace()).collect();
        let allowed = self
            .listable(user, namespaces, "webhooksubscriptions")
            .await?;
        subscriptions.retain(|s| allowed.contains(&s.namespace().unwrap_or_default()));
        Ok(subscriptions)
    }
}
