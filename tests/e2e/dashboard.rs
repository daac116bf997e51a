//! The dashboard's trust model against a real API server: TokenReview at login, an opaque
//! HttpOnly session cookie, SubjectAccessReview per page for that user, actions made with the
//! user's own token, CSRF and origin checks, logout, idle expiry, and a revoked token ending the
//! session. (The browser test, scripts/browser-test.sh, walks the same pages in Chromium.)
use std::time::Duration;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use webhook_operator::api::WebhookEndpoint;

use crate::dispatcher::Setup;
use crate::receiver::{Behavior, Receiver};
use crate::support::{kubectl, wait_for, Process};

async fn kubectl_async(args: Vec<String>, stdin: String) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl(&args, &stdin)
    })
    .await
    .unwrap()
}

/// A ServiceAccount bound to a Role with `rules` in `ns`; returns a token of it.
pub async fn service_account(ns: &str, name: &str, rules: &str) -> String {
    let manifest = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {name}, namespace: {ns}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: {name}, namespace: {ns}}}\nrules: {rules}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         subjects: [{{kind: ServiceAccount, name: {name}, namespace: {ns}}}]\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}}}\n"
    );
    let (ok, out) = kubectl_async(vec!["apply".into(), "-f".into(), "-".into()], manifest).await;
    assert!(ok, "{out}");
    let (ok, token) = kubectl_async(
        ["-n", ns, "create", "token", name]
            .map(String::from)
            .to_vec(),
        String::new(),
    )
    .await;
    assert!(ok, "{token}");
    token.trim().to_owned()
}

struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(listen: &str) -> Self {
        Self {
            http: {
                webhook_operator::runtime::tls::install_default_provider();
                reqwest::Client::builder()
            }
            .redirect(Policy::none())
            .build()
            .unwrap(),
            base: format!("http://{listen}/ui"),
            cookie: None,
        }
    }

    /// Logs in; returns the status of the login answer.
    async fn login(&mut self, token: &str) -> u16 {
        let response = self
            .http
            .post(format!("{}/login", self.base))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        if let Some(set) = response.headers().get(SET_COOKIE) {
            let set = set.to_str().unwrap();
            assert!(
                set.contains("HttpOnly") && set.contains("SameSite=Strict"),
                "{set}"
            );
            assert!(!set.contains(token), "the cookie is not the token");
            self.cookie = Some(set.split(';').next().unwrap().to_owned());
        }
        response.status().as_u16()
    }

    async fn get(&self, path: &str) -> (u16, String, Option<String>) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        let response = request.send().await.unwrap();
        let location = response
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        (
            response.status().as_u16(),
            response.text().await.unwrap(),
            location,
        )
    }

    async fn csrf(&self) -> String {
        let (_, page, _) = self.get("/endpoints").await;
        let start = page
            .find("X-CSRF-Token&quot;:&quot;")
            .expect("the page carries a CSRF token")
            + 25;
        page[start..].split("&quot;").next().unwrap().to_owned()
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("HX-Request", "true");
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

#[tokio::test]
async fn each_user_sees_and_does_what_rbac_grants_them() {
    let setup = Setup::new_without_dispatcher("dashboard").await;
    let ns = setup.ns.name.clone();
    let store = setup.store_path().display().to_string();
    let (_dispatcher, listen, _) = Process::dispatcher_with(
        &ns,
        "d1",
        &["--store-path", &store, "--dashboard-idle-timeout", "20s"],
    );
    let receiver = Receiver::start(Behavior::Ok).await;
    setup
        .endpoint("crm", &receiver, serde_json::json!({}))
        .await;
    setup
        .event(
            "hello",
            "user.created",
            serde_json::json!({"user": {"id": 1}}),
        )
        .await;
    wait_for("the delivery", Duration::from_secs(30), || async {
        (receiver.requests() >= 1).then_some(())
    })
    .await;

    let reader_rules =
        "[{apiGroups: [webhooks.pitchey.io], resources: [webhookendpoints], verbs: [get, list]}]";
    let editor_rules = "[{apiGroups: [webhooks.pitchey.io], resources: [webhookendpoints], verbs: [get, list, update, patch]}]";
    let reader = service_account(&ns, "reader", reader_rules).await;
    let editor = service_account(&ns, "editor", editor_rules).await;

    // No session: the login page. A bad token: 401 with a message, no cookie.
    let mut anonymous = Browser::new(&listen);
    let (status, _, location) = anonymous.get("/endpoints").await;
    assert_eq!((status, location.as_deref()), (303, Some("/ui/login")));
    assert_eq!(anonymous.login("not-a-token").await, 401);
    assert!(anonymous.cookie.is_none());

    // A user without rights (the control plane's static user `nobody`) sees no endpoint, and the
    // endpoint's page is "not found".
    let mut stranger = Browser::new(&listen);
    assert_eq!(stranger.login("test-nobody-token").await, 303);
    let (status, page, _) = stranger.get("/endpoints").await;
    assert_eq!(status, 200);
    assert!(!page.contains(&ns), "no trace of the namespace: {page}");
    let (status, page, _) = stranger
        .get(&format!("/namespaces/{ns}/endpoints/crm"))
        .await;
    assert_eq!(status, 404);
    assert!(!page.contains(&receiver.url()));
    let (status, _, _) = stranger
        .get(&format!("/namespaces/{ns}/endpoints/absent"))
        .await;
    assert_eq!(
        status, 404,
        "an endpoint that does not exist looks the same"
    );

    // The reader sees the endpoint and its delivery, but may not suspend it: the API server
    // refuses the patch made with the reader's own token.
    let mut reading = Browser::new(&listen);
    assert_eq!(reading.login(&reader).await, 303);
    let (status, page, _) = reading.get("/endpoints").await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("/ui/namespaces/{ns}/endpoints/crm")),
        "{page}"
    );
    let (status, page, _) = reading
        .get(&format!("/namespaces/{ns}/endpoints/crm"))
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("user.created"), "the delivery is listed");
    let csrf = reading.csrf().await;
    let (status, body) = reading
        .post(
            &format!("/namespaces/{ns}/endpoints/crm/suspend"),
            &[("X-CSRF-Token", &csrf)],
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("refused by the Kubernetes API"), "{body}");
    let (status, body) = reading
        .post(
            &format!("/namespaces/{ns}/endpoints/crm/test"),
            &[("X-CSRF-Token", &csrf)],
        )
        .await;
    assert_eq!(status, 403, "a test needs update: {body}");

    // The editor suspends it; the change is made as the editor (managedFields name the
    // dashboard's field manager, the API server's audit log the user).
    let mut editing = Browser::new(&listen);
    assert_eq!(editing.login(&editor).await, 303);
    let csrf = editing.csrf().await;
    let path = format!("/namespaces/{ns}/endpoints/crm/suspend");
    let (status, _) = editing.post(&path, &[]).await;
    assert_eq!(status, 403, "no CSRF token");
    let (status, _) = editing.post(&path, &[("X-CSRF-Token", "forged")]).await;
    assert_eq!(status, 403, "a wrong CSRF token");
    let (status, _) = editing
        .post(
            &path,
            &[("X-CSRF-Token", &csrf), ("Origin", "http://evil.example")],
        )
        .await;
    assert_eq!(status, 403, "another origin");
    let (status, _) = reading.post(&path, &[("X-CSRF-Token", &csrf)]).await;
    assert_eq!(status, 403, "another session's CSRF token");
    let (status, body) = editing.post(&path, &[("X-CSRF-Token", &csrf)]).await;
    assert_eq!(status, 200, "{body}");
    let endpoint: WebhookEndpoint = setup.ns.api().get("crm").await.unwrap();
    assert!(endpoint.spec.suspend);
    assert!(endpoint
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .any(|f| f.manager.as_deref() == Some("webhook-operator-dashboard")));
    let (status, body) = editing
        .post(
            &format!("/namespaces/{ns}/endpoints/crm/test"),
            &[("X-CSRF-Token", &csrf)],
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Logout ends the session on the server: the old cookie no longer works.
    let (status, _) = editing.post("/logout", &[("X-CSRF-Token", &csrf)]).await;
    assert_eq!(
        status, 200,
        "htmx gets HX-Redirect, not a 303 it would follow itself"
    );
    let (status, _, location) = editing.get("/endpoints").await;
    assert_eq!((status, location.as_deref()), (303, Some("/ui/login")));

    // A token revoked after login (its ServiceAccount deleted) ends the session once the cached
    // TokenReview answer expires (--auth-cache-seconds, 10 s by default).
    let (ok, out) = kubectl_async(
        ["-n", &ns, "delete", "serviceaccount", "reader"]
            .map(String::from)
            .to_vec(),
        String::new(),
    )
    .await;
    assert!(ok, "{out}");
    wait_for(
        "the revoked token to end the session",
        Duration::from_secs(30),
        || async {
            let (status, _, location) = reading.get("/endpoints").await;
            (status == 303 && location.as_deref() == Some("/ui/login")).then_some(())
        },
    )
    .await;

    // Idle sessions end (--dashboard-idle-timeout 20s).
    tokio::time::sleep(Duration::from_secs(21)).await;
    let (status, _, _) = stranger.get("/endpoints").await;
    assert_eq!(status, 303, "the idle session ended");
}
