//! Every HTTP endpoint against a real listening server (SQLite), with
//! every 4xx path: oversized bodies, invalid JSON, wrong types, unknown
//! ids, bad queries and headers. None of them may answer 5xx.

use serde_json::{json, Value};

use crate::util::*;

async fn node() -> (TestDb, baton::NodeHandle, Http) {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |c| c.http.max_body_bytes = 64 * 1024).await;
    let http = Http::new(&node.url());
    (db, node, http)
}

fn error_code(r: &Resp) -> &str {
    r.json["error"]["code"].as_str().unwrap_or("")
}

#[actix_rt::test]
async fn health_endpoints() {
    let (_db, node, http) = node().await;
    let h = http.get("/api/healthstatus").await;
    assert_eq!(h.status, 200);
    assert_eq!(
        h.json,
        json!({"node_id": node.node_id(), "state": "RUNNING", "role": "active"})
    );
    assert_eq!(http.get("/health/liveness").await.status, 200);
    let m = http.get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.text.contains("baton_node_up{"), "{}", m.text);
    // Stable series: every state and role present, 1 for the current one.
    for line in [
        "baton_node_state{node=\"",
        "state=\"RUNNING\"} 1",
        "state=\"STANDBY\"} 0",
        "state=\"FENCED\"} 0",
        "role=\"active\"} 1",
        "role=\"standby\"} 0",
    ] {
        assert!(m.text.contains(line), "{line}: {}", m.text);
    }
    assert!(
        m.text.contains("baton_item_latency_seconds_bucket"),
        "{}",
        m.text
    );
    node.stop().await;
}

#[actix_rt::test]
async fn import_json_and_yaml_list_and_get() {
    let (_db, node, http) = node().await;
    let r = http
        .request("POST", "/api/workflows", &[], Some(example("order.json")))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/api/workflows/order")
    );
    assert_eq!(r.header("etag").as_deref(), Some("\"1\""));
    let r = http
        .request(
            "POST",
            "/api/workflows",
            &[("Content-Type", "application/yaml")],
            Some(example("greet.yaml")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["items"]["announce"]["action"], "log");
    let list = http.get("/api/workflows").await;
    assert_eq!(
        list.json,
        json!([{"id": "greet", "name": "Greet", "version": 1}, {"id": "order", "name": "Order", "version": 1}])
    );
    let id = start(&http, "greet", json!({"who": "eve"})).await;
    let e = wait_final(&http, &id, std::time::Duration::from_secs(30)).await;
    assert_eq!(e["outputs"]["message"], "Hello, eve!");
    assert_eq!(
        http.get(&format!("/api/executions/{id}/state")).await.json,
        json!({"state": "completed"})
    );
    let all = http
        .get("/api/workflows/greet/executions?state=completed&limit=10")
        .await;
    assert_eq!(all.json.as_array().map(Vec::len), Some(1));
    let none = http
        .get("/api/workflows/greet/executions?state=running")
        .await;
    assert_eq!(none.json, json!([]));
    node.stop().await;
}

#[actix_rt::test]
async fn invalid_definitions_report_every_problem_with_its_path() {
    let (_db, node, http) = node().await;
    let bad = json!({
        "id": "bad id!",
        "inputs": {"n": "numbr"},
        "start": "a",
        "items": {
            "a": {"type": "task", "script": "total = ;", "next": "zz"},
            "b": {"type": "teleport"},
            "c": {"type": "decision", "condition": "1 +", "then": "a", "else": "a"},
            "d": {"type": "action", "action": "no_such_action", "next": "e", "colour": "red"},
            "e": {"type": "end"}
        }
    });
    let r = http.post("/api/workflows", &bad).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(error_code(&r), "invalid_definition");
    let paths: Vec<&str> = r.json["error"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["path"].as_str().unwrap_or(""))
        .collect();
    for expected in [
        "id",
        "inputs.n",
        "items.a.next",
        "items.a.script",
        "items.b.type",
        "items.c.condition",
        "items.d.action",
        "items.d.colour",
    ] {
        assert!(
            paths.contains(&expected),
            "missing problem at {expected}: {paths:?}"
        );
    }

    // With every item sound, unreachable items are reported too.
    let r = http
        .post("/api/workflows", &json!({"id": "island", "start": "a", "items": {"a": {"type": "end"}, "lost": {"type": "end"}}}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json["error"]["details"][0]["path"], "items.lost",
        "{}",
        r.text
    );
    // A signal item cannot await Baton's own signals (it would take a
    // cancel request as its payload): `__` names are refused at import.
    let r = http
        .post(
            "/api/workflows",
            &json!({"id": "sneaky", "start": "a", "items": {
            "a": {"type": "signal", "name": "__cancel", "next": "e"}, "e": {"type": "end"}}}),
        )
        .await;
    assert_eq!(
        (r.status, error_code(&r)),
        (400, "invalid_definition"),
        "{}",
        r.text
    );
    assert_eq!(
        r.json["error"]["details"][0]["path"], "items.a.name",
        "{}",
        r.text
    );
    assert!(r.text.contains("reserved"), "{}", r.text);
    // Duplicate item ids are reported, not silently merged.
    let dup =
        br#"{"id":"dup","start":"a","items":{"a":{"type":"end"},"a":{"type":"end"}}}"#.to_vec();
    let r = http.request("POST", "/api/workflows", &[], Some(dup)).await;
    assert_eq!(r.status, 400);
    assert!(
        r.text.contains("items.a") && r.text.contains("duplicate"),
        "{}",
        r.text
    );
    // A missing start, and no items.
    let r = http
        .post("/api/workflows", &json!({"id": "empty", "items": {}}))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text.contains("\"start\"") && r.text.contains("at least one item"),
        "{}",
        r.text
    );
    // Invalid JSON and invalid YAML.
    let r = http
        .request("POST", "/api/workflows", &[], Some(b"{\"id\": ".to_vec()))
        .await;
    assert_eq!((r.status, error_code(&r)), (400, "invalid_definition"));
    assert!(r.text.contains("invalid JSON"), "{}", r.text);
    let r = http
        .request(
            "POST",
            "/api/workflows",
            &[("Content-Type", "application/yaml")],
            Some(b"id: [unclosed".to_vec()),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("invalid YAML"), "{}", r.text);
    // Unsupported media type, oversized body.
    let r = http
        .request(
            "POST",
            "/api/workflows",
            &[("Content-Type", "application/xml")],
            Some(b"<a/>".to_vec()),
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.text);
    let huge = format!("{{\"id\": \"x\", \"name\": \"{}\"}}", "y".repeat(70 * 1024)).into_bytes();
    let r = http
        .request("POST", "/api/workflows", &[], Some(huge))
        .await;
    assert_eq!((r.status, error_code(&r)), (413, "payload_too_large"));
    // Nothing was stored by any of these.
    assert_eq!(http.get("/api/workflows").await.json, json!([]));
    node.stop().await;
}

#[actix_rt::test]
async fn start_requests_are_checked() {
    let (_db, node, http) = node().await;
    let r = http
        .request("POST", "/api/workflows", &[], Some(example("order.json")))
        .await;
    assert_eq!(r.status, 201);
    let path = "/api/workflows/order/executions";
    let r = http
        .post(
            path,
            &json!({"inputs": {"n": "seven", "who": "x", "extra": 1}}),
        )
        .await;
    assert_eq!(
        (r.status, error_code(&r)),
        (400, "invalid_inputs"),
        "{}",
        r.text
    );
    let details: Vec<&str> = r.json["error"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["path"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(details, ["inputs.n", "inputs.extra"]);
    let r = http.post(path, &json!({"inputs": {"n": 1}})).await;
    assert!(r.text.contains("inputs.who"), "{}", r.text);
    let r = http.post(path, &json!({"inputs": [1, 2]})).await;
    assert_eq!(r.status, 400);
    let r = http.post(path, &json!({"inputz": {}})).await;
    assert_eq!(
        (r.status, error_code(&r)),
        (400, "invalid_body"),
        "{}",
        r.text
    );
    assert!(r.text.contains("inputz"), "{}", r.text);
    let r = http
        .post(
            path,
            &json!({"inputs": {"n": 1, "who": "a"}, "execution_id": 5}),
        )
        .await;
    assert!(
        r.status == 400 && r.text.contains("execution_id"),
        "{}",
        r.text
    );
    let r = http
        .post(
            path,
            &json!({"inputs": {"n": 1, "who": "a"}, "execution_id": "has space"}),
        )
        .await;
    assert!(
        r.status == 400 && r.text.contains("execution_id"),
        "{}",
        r.text
    );
    let r = http
        .request("POST", path, &[], Some(b"{nope".to_vec()))
        .await;
    assert_eq!((r.status, error_code(&r)), (400, "invalid_json"));
    // One value and stray bytes after it (schemathesis, a random seed in
    // CI, started an execution with `{}` and random bytes).
    for body in [&b"{}\xff\x10X"[..], b"{} {}", b"{\"inputs\": {}} x"] {
        let r = http.request("POST", path, &[], Some(body.to_vec())).await;
        assert_eq!(
            (r.status, error_code(&r)),
            (400, "invalid_json"),
            "{body:?}: {}",
            r.text
        );
    }
    let r = http
        .post("/api/workflows/nope/executions", &json!({}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.text.contains("nope"));
    assert_eq!(
        http.get("/api/workflows/order/executions").await.json,
        json!([]),
        "no bad request started anything"
    );
    node.stop().await;
}

#[actix_rt::test]
async fn unknown_ids_queries_headers_and_routes() {
    let (_db, node, http) = node().await;
    for path in [
        "/api/workflows/none",
        "/api/executions/none",
        "/api/executions/none/state",
        "/api/executions/none/logs",
        "/api/workflows/none/executions",
        "/api/nothing",
    ] {
        let r = http.get(path).await;
        assert_eq!(
            (r.status, error_code(&r)),
            (404, "not_found"),
            "{path}: {}",
            r.text
        );
    }
    let r = http
        .request("POST", "/api/executions/none/cancel", &[], None)
        .await;
    assert_eq!(r.status, 404);
    let r = http
        .request("DELETE", "/api/workflows/none", &[], None)
        .await;
    assert_eq!(r.status, 404);
    let r = http
        .request("POST", "/api/workflows", &[], Some(example("order.json")))
        .await;
    assert_eq!(r.status, 201);
    for q in [
        "state=sleeping",
        "limit=0",
        "limit=abc",
        "limit=5000",
        "colour=red",
    ] {
        let r = http
            .get(&format!("/api/workflows/order/executions?{q}"))
            .await;
        assert_eq!(r.status, 400, "{q}: {}", r.text);
    }
    let r = http
        .get("/api/workflows/order/executions?after=ghost")
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let body = Some(example("order.json"));
    let r = http
        .request(
            "PUT",
            "/api/workflows/order",
            &[("If-Match", "yesterday")],
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = http
        .request(
            "PUT",
            "/api/workflows/other",
            &[("If-Match", "\"1\"")],
            body,
        )
        .await;
    assert_eq!(
        r.status, 400,
        "the body's id must match the URL: {}",
        r.text
    );
    let r = http
        .request(
            "PUT",
            "/api/workflows/order",
            &[("If-Match", "\"1\"")],
            Some(b"[]".to_vec()),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        http.get("/api/workflows/order")
            .await
            .header("etag")
            .as_deref(),
        Some("\"1\""),
        "nothing stored was changed"
    );
    let r = http.get("/api/cluster/events?limit=-1").await;
    assert_eq!(r.status, 400);
    node.stop().await;
}

#[actix_rt::test]
async fn cluster_and_openapi() {
    let (_db, node, http) = node().await;
    let c = http.get("/api/cluster").await;
    assert_eq!(c.status, 200);
    assert_eq!(c.json["mode"], "standalone");
    assert_eq!(c.json["settings"]["failover_timeout_ms"], 5000);
    assert_eq!(c.json["nodes"][0]["id"], node.node_id());
    assert_eq!(c.json["nodes"][0]["epoch"], 1);
    let events = http.get("/api/cluster/events").await;
    assert_eq!(events.json[0]["kind"], "join", "{}", events.text);

    let doc = http.get("/api/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(doc.json["openapi"].as_str().unwrap_or("").starts_with("3."));
    let paths = doc.json["paths"].as_object().expect("paths");
    for p in [
        "/api/healthstatus",
        "/health/liveness",
        "/api/workflows",
        "/api/workflows/{id}",
        "/api/workflows/{id}/executions",
        "/api/executions/{eid}",
        "/api/executions/{eid}/state",
        "/api/executions/{eid}/logs",
        "/api/executions/{eid}/cancel",
        "/api/executions/{eid}/resume",
        "/api/cluster/nodes/{id}/fence",
        "/api/cluster/nodes/{id}/restart",
        "/api/cluster",
        "/api/cluster/events",
        "/metrics",
        "/api/openapi.json",
    ] {
        assert!(paths.contains_key(p), "OpenAPI lacks {p}");
    }
    let wf: &Value = &paths["/api/workflows/{id}"];
    for m in ["get", "put", "delete"] {
        assert!(
            wf.get(m).is_some(),
            "OpenAPI lacks {m} /api/workflows/{{id}}"
        );
    }
    // A database outage (or a standby) answers 503 with Retry-After.
    for (p, m) in [
        ("/api/workflows", "get"),
        ("/api/workflows", "post"),
        ("/api/executions/{eid}", "get"),
        ("/api/executions/{eid}/cancel", "post"),
        ("/api/cluster", "get"),
    ] {
        let r = &paths[p][m]["responses"]["503"];
        assert!(
            r["headers"].get("Retry-After").is_some()
                && r["content"]["application/json"]["schema"]["$ref"]
                    == "#/components/schemas/ErrorBody",
            "{m} {p} documents 503: {r}"
        );
    }
    assert!(paths["/health/liveness"]["get"]["responses"]
        .get("503")
        .is_none());
    assert!(doc.json["components"]["schemas"].get("ErrorBody").is_some());
    // An open node (no tokens): every caller may do everything.
    let me = http.get("/api/auth/whoami").await;
    assert_eq!(
        (me.status, me.json),
        (200, json!({"role": "operator", "authenticated": false}))
    );
    node.stop().await;
}

#[actix_rt::test]
async fn tokens_guard_the_api() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |c| c.auth.tokens = operator_and_viewer_tokens()).await;
    let http = Http::new(&node.url());
    assert_eq!(
        http.get("/api/healthstatus").await.status,
        200,
        "health stays open for load balancers"
    );
    assert_eq!(http.get("/api/workflows").await.status, 401);
    let bad = http
        .request(
            "GET",
            "/api/workflows",
            &[("Authorization", "Bearer wrong")],
            None,
        )
        .await;
    assert_eq!(bad.status, 401);
    let view = http
        .request(
            "GET",
            "/api/workflows",
            &[("Authorization", "Bearer view-secret")],
            None,
        )
        .await;
    assert_eq!(view.status, 200);
    let body = Some(example("order.json"));
    let denied = http
        .request(
            "POST",
            "/api/workflows",
            &[("Authorization", "Bearer view-secret")],
            body.clone(),
        )
        .await;
    assert_eq!(denied.status, 403);
    let ok = http
        .request(
            "POST",
            "/api/workflows",
            &[("Authorization", "Bearer op-secret")],
            body,
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    // Each token learns its role (the dashboard hides what it may not do).
    let whoami = |t: &'static str| {
        let http = http.clone();
        async move {
            let auth = format!("Bearer {t}");
            http.request("GET", "/api/auth/whoami", &[("Authorization", &auth)], None)
                .await
        }
    };
    let v = whoami("view-secret").await;
    assert_eq!(
        (v.status, &v.json),
        (200, &json!({"role": "viewer", "authenticated": true}))
    );
    let o = whoami("op-secret").await;
    assert_eq!(
        (o.status, &o.json),
        (200, &json!({"role": "operator", "authenticated": true}))
    );
    assert_eq!(whoami("wrong").await.status, 401);
    assert_eq!(http.get("/api/auth/whoami").await.status, 401);
    node.stop().await;
}

#[actix_rt::test]
async fn every_example_workflow_imports_and_runs() {
    let (_db, node, http) = node().await;
    let dir = format!("{}/examples/workflows", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for f in &files {
        let yaml = f.extension().is_some_and(|e| e == "yaml");
        let ct = if yaml {
            "application/yaml"
        } else {
            "application/json"
        };
        let r = http
            .request(
                "POST",
                "/api/workflows",
                &[("Content-Type", ct)],
                Some(std::fs::read(f).expect("read")),
            )
            .await;
        assert_eq!(r.status, 201, "{}: {}", f.display(), r.text);
    }
    let t = std::time::Duration::from_secs(30);
    let run = |wf: &'static str, inputs: Value| {
        let http = http.clone();
        async move { wait_final(&http, &start(&http, wf, inputs).await, t).await }
    };
    assert_eq!(
        run("order", json!({"n": 7, "who": "ann"})).await["outputs"]["total"],
        114
    );
    assert_eq!(
        run("greet", json!({"who": "bo"})).await["outputs"]["message"],
        "Hello, bo!"
    );
    assert_eq!(
        run("retry-and-catch", json!({})).await["state"],
        "completed"
    );
    assert_eq!(
        run("slow-steps", json!({"ms": 10})).await["outputs"]["count"],
        3
    );
    assert_eq!(run("square", json!({"x": 9})).await["outputs"]["y"], 81);
    let e = run("fan-out", json!({"xs": [1, 2, 3]})).await;
    assert_eq!(
        (
            e["outputs"]["squares"].clone(),
            e["outputs"]["sum_squared"].clone()
        ),
        (json!([1, 4, 9]), json!(196)),
        "{e}"
    );
    let id = start(&http, "approval", json!({})).await;
    eventually("waiting for approval", t, || async {
        http.get(&format!("/api/executions/{id}")).await.json["waiting_for"]["name"] == "approve"
    })
    .await;
    let r = http
        .post(
            &format!("/api/executions/{id}/signals/approve"),
            &json!({"payload": {"by": "ann"}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    eventually("asking the amount", t, || async {
        http.get(&format!("/api/executions/{id}")).await.json["waiting_for"]["kind"]
            == "interaction"
    })
    .await;
    let r = http
        .post(
            &format!("/api/executions/{id}/interaction"),
            &json!({"inputs": {"amount": 250}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let e = wait_final(&http, &id, t).await;
    assert_eq!(
        (
            e["outputs"]["decision"].clone(),
            e["outputs"]["amount"].clone()
        ),
        (json!("approved by ann"), json!(250)),
        "{e}"
    );
    node.stop().await;
}

/// What schemathesis (`.ci/schemathesis.sh`) found, each answered as the
/// OpenAPI document says.
#[actix_rt::test]
async fn schemathesis_findings_are_answered_as_documented() {
    let (_db, node, http) = node().await;
    // A method the path does not take: 405 with `Allow`, not 404.
    for (method, path, allow) in [
        ("TRACE", "/api/cluster", "GET"),
        ("DELETE", "/api/workflows", "GET, POST"),
        ("PATCH", "/api/workflows/order", "GET, PUT, DELETE"),
        ("GET", "/api/executions/e1/cancel", "POST"),
    ] {
        let r = http.request(method, path, &[], None).await;
        assert_eq!(
            (r.status, error_code(&r), r.header("allow").as_deref()),
            (405, "method_not_allowed", Some(allow)),
            "{method} {path}: {}",
            r.text
        );
    }
    let r = http.request("TRACE", "/api/nothing", &[], None).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = http.get("/api/workflows/").await;
    assert_eq!(r.status, 404, "{}", r.text);

    // A start body that is an array was read as a struct, field by field
    // (`[]` started an execution with no inputs).
    let plain = json!({"id": "plain", "start": "e", "items": {"e": {"type": "end"}}});
    assert_eq!(http.post("/api/workflows", &plain).await.status, 201);
    // A body of whitespace is not an empty body, nor JSON (schemathesis,
    // a random seed in CI, started executions with a form feed and with a
    // space).
    for body in [&b"\x0c"[..], b" ", b"\n"] {
        let r = http
            .request(
                "POST",
                "/api/workflows/plain/executions",
                &[],
                Some(body.to_vec()),
            )
            .await;
        assert_eq!(
            (r.status, error_code(&r)),
            (400, "invalid_json"),
            "{body:?}: {}",
            r.text
        );
    }
    for body in ["[]", "[{}, \"x\"]", " [ ] "] {
        let r = http
            .request(
                "POST",
                "/api/workflows/plain/executions",
                &[],
                Some(body.as_bytes().to_vec()),
            )
            .await;
        assert_eq!(
            (
                r.status,
                error_code(&r),
                r.json["error"]["details"][0]["path"].as_str()
            ),
            (400, "invalid_body", Some("$")),
            "{body}: {}",
            r.text
        );
    }
    // The body is optional: none, or `null`, starts with no inputs.
    for body in [None, Some(b"null".to_vec())] {
        let r = http
            .request("POST", "/api/workflows/plain/executions", &[], body)
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
    }

    // The document states the limits the server enforces.
    let doc = http.get("/api/openapi.json").await.json;
    for (path, method) in [
        ("/api/cluster/events", "get"),
        ("/api/workflows/{id}/executions", "get"),
    ] {
        let limit = doc["paths"][path][method]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "limit"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
            (&json!(1), &json!(1000)),
            "{method} {path}: {limit}"
        );
    }
    let start = &doc["paths"]["/api/workflows/{id}/executions"]["post"]["requestBody"];
    assert_ne!(start["required"], json!(true), "{start}");
    let eid = &doc["components"]["schemas"]["StartRequest"]["properties"]["execution_id"];
    assert!(eid["pattern"].is_string(), "{eid}");
    // Definitions have their schema: what import, get and replace exchange.
    let def = json!({"$ref": "#/components/schemas/Definition"});
    let ops = &doc["paths"];
    assert_eq!(
        ops["/api/workflows"]["post"]["requestBody"]["content"]["application/json"]["schema"],
        def
    );
    assert_eq!(
        ops["/api/workflows/{id}"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"],
        def
    );
    let schema = &doc["components"]["schemas"]["Definition"];
    assert_eq!(schema["required"], json!(["id", "start", "items"]));
    // Items are a tagged union: one schema per type, with its own fields.
    let variants = doc["components"]["schemas"]["DefinitionItem"]["oneOf"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(variants.len(), 9, "one per item type");
    // Every item of every example fits the variant of its type.
    for (name, text) in baton::demo::EXAMPLES {
        let def: Value = if name.ends_with(".json") {
            serde_json::from_str(text).expect("JSON")
        } else {
            serde_yaml_ng::from_str(text).expect("YAML")
        };
        for (id, item) in def["items"].as_object().expect("items") {
            let v = variants
                .iter()
                .find(|v| v["properties"]["type"]["const"] == item["type"])
                .unwrap_or_else(|| panic!("{name} {id}: no variant for {}", item["type"]));
            assert_eq!(v["additionalProperties"], json!(false));
            for key in item.as_object().expect("object").keys() {
                assert!(
                    v["properties"].get(key).is_some(),
                    "{name} {id}: `{key}` is not in the {} schema",
                    item["type"]
                );
            }
            for req in v["required"].as_array().expect("required") {
                assert!(
                    item.get(req.as_str().unwrap_or_default()).is_some(),
                    "{name} {id}: lacks required {req}"
                );
            }
        }
    }
    // Bearer tokens: the scheme, and 401/403 where they can be answered.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer"})
    );
    assert!(ops["/api/workflows"]["get"]["responses"]["401"].is_object());
    assert!(ops["/api/workflows"]["post"]["responses"]["403"].is_object());
    assert!(ops["/api/workflows"]["get"]["responses"]
        .get("403")
        .is_none());
    assert!(ops["/api/healthstatus"]["get"]["responses"]
        .get("401")
        .is_none());
    // Headers.
    let headers = |path: &str, method: &str, status: &str| {
        ops[path][method]["responses"][status]["headers"]
            .as_object()
            .map(|h| {
                let mut keys = h.keys().cloned().collect::<Vec<_>>();
                keys.sort();
                keys
            })
            .unwrap_or_default()
    };
    assert_eq!(
        headers("/api/workflows", "post", "201"),
        ["ETag", "Location"]
    );
    assert_eq!(headers("/api/workflows/{id}", "get", "200"), ["ETag"]);
    assert_eq!(headers("/api/workflows/{id}", "put", "200"), ["ETag"]);
    assert_eq!(
        headers("/api/workflows/{id}/executions", "post", "202"),
        ["Baton-Created", "Location"]
    );
    // Every operation of the document is routed (the route table and the
    // document are made from one list of handlers).
    for (path, item) in ops.as_object().expect("paths") {
        for method in item.as_object().expect("methods").keys() {
            let concrete = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let r = http
                .request(&method.to_uppercase(), &concrete, &[], None)
                .await;
            assert!(
                !r.text.contains("no route for"),
                "{method} {path} is documented but not routed: {}",
                r.text
            );
        }
    }
    node.stop().await;
}

/// Issue 9 item 6: `node.advertise_url` is the address the cluster view
/// shows for the node (and a standby's 503 names), not the listen address.
#[actix_rt::test]
async fn the_advertised_url_is_what_the_cluster_shows() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |c| {
        c.node.advertise_url = Some("http://baton-a.internal:8280/".into())
    })
    .await;
    let http = Http::new(&node.url());
    let c = http.get("/api/cluster").await.json;
    assert_eq!(
        c["nodes"][0]["address"], "http://baton-a.internal:8280",
        "{c}"
    );
    node.stop().await;
}
