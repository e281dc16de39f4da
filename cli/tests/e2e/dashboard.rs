//! The dashboard in a real headless Chromium over WebDriver: log in, create an agent from the form and
//! watch it turn ready without a reload, run a command, type into the web terminal, leave it and
//! re-attach from the agent's page, stop and destroy.
//! Also the refusals: a wrong token, and forms without their CSRF token.

use std::time::Duration;

use fantoccini::{Client, Locator};
use reqwest::StatusCode;

use crate::support::web::{Api, Browser, artifacts_dir};
use crate::support::{Hub, wait_for};

const WAIT: Duration = Duration::from_secs(90);

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Chromium abandons a page load with ERR_NETWORK_CHANGED whenever the host's interfaces change, and
/// other tests' containers add and remove veth interfaces all the time. A person would press Reload,
/// and so does the test; any other error page stays and fails the wait.
async fn reload_after_a_network_change(c: &Client) {
    let Ok(body) = c.find(Locator::Css("body")).await else {
        return;
    };
    if body
        .text()
        .await
        .is_ok_and(|t| t.contains("ERR_NETWORK_CHANGED"))
    {
        eprintln!(
            "dashboard: the browser saw a network change (another test's container); reloading"
        );
        let _ = c.refresh().await;
    }
}

/// Waits (in the page, no reloads but after a network change) until the element's text satisfies
/// `want`.
async fn wait_text(c: &Client, css: &str, want: impl Fn(&str) -> bool, what: &str) -> String {
    // The outer bound comes first, so a timeout shows the page.
    let seen = tokio::time::timeout(
        WAIT,
        wait_for(&format!("{what} in {css}"), WAIT * 2, || async {
            let text = match c.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.ok(),
                Err(_) => None,
            };
            match text {
                Some(t) if want(&t) => Some(t),
                _ => {
                    reload_after_a_network_change(c).await;
                    None
                }
            }
        }),
    )
    .await;
    match seen {
        Ok(text) => text,
        Err(_) => {
            // What a person would see: the address and the page's text (a browser's own error page
            // names its error code there, far below its style sheet).
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let body = match c.find(Locator::Css("body")).await {
                Ok(b) => b.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            panic!(
                "timed out waiting for {what} in {css}; at {url}, the page says: {}",
                body.chars().take(3000).collect::<String>()
            )
        }
    }
}

/// The last `SIZE rows cols` line the shell printed.
fn last_size(screen: &str) -> Option<(u32, u32)> {
    screen.lines().rev().find_map(|l| {
        let mut words = l.split_whitespace();
        if words.next() != Some("SIZE") {
            return None;
        }
        let rows = words.next()?.parse().ok()?;
        let cols = words.next()?.parse().ok()?;
        Some((rows, cols))
    })
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(artifacts_dir().join(name), png).unwrap();
}

async fn submit(c: &Client, form_css: &str) {
    c.find(Locator::Css(&format!("{form_css} button[type=submit]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_drives_an_agent_through_its_life() {
    let hub = Hub::builder().start().await;
    let base = format!("http://{}", hub.operator_addr());
    let name = hub.name("web");
    let browser = Browser::start().await;
    let c = &browser.client;

    // Any page sends a stranger to the login form, which refuses a wrong token.
    c.goto(&format!("{base}/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().starts_with("/login"));
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys("not-the-token")
        .await
        .unwrap();
    submit(c, "form").await;
    wait_text(
        c,
        ".error",
        |t| t.contains("not this hub's admin token"),
        "the wrong-token message",
    )
    .await;

    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(&hub.admin_token())
        .await
        .unwrap();
    submit(c, "form").await;
    wait_text(c, "h1", |t| t == "Fleet", "the fleet page").await;

    // Create from the form, then watch the agent page turn ready with no reload: a marker set on the
    // window survives only if the page is never reloaded.
    c.goto(&format!("{base}/create")).await.unwrap();
    c.find(Locator::Css("#name"))
        .await
        .unwrap()
        .send_keys(&name)
        .await
        .unwrap();
    c.find(Locator::Css("#env"))
        .await
        .unwrap()
        .send_keys("GREETING=<b>bold</b>")
        .await
        .unwrap();
    submit(c, "form.stacked").await;
    wait_text(c, "h1", |t| t == name, "the agent page").await;
    c.execute("window.__notReloaded = true;", vec![])
        .await
        .unwrap();
    wait_text(
        c,
        "[data-region=state]",
        |t| t.contains("ready") && t.contains("connected"),
        "ready",
    )
    .await;
    let marker = c
        .execute("return window.__notReloaded === true;", vec![])
        .await
        .unwrap();
    assert_eq!(
        marker,
        serde_json::Value::Bool(true),
        "the page reloaded instead of updating live"
    );

    // Run a command; its output (markup and escape sequences included) shows as text.
    c.find(Locator::Css("#command"))
        .await
        .unwrap()
        .send_keys("echo \"hello $GREETING\"; printf '\\033[31mred\\033[0m\\n'; echo oops >&2")
        .await
        .unwrap();
    submit(c, "form.run").await;
    let out = wait_text(c, "#output", |t| t.contains("oops"), "the command's output").await;
    assert!(out.contains("hello <b>bold</b>"), "{out}");
    assert!(out.contains("red") && !out.contains("[31m"), "{out}");
    let bold = c.find_all(Locator::Css("#output b")).await.unwrap();
    assert!(bold.is_empty(), "task output was rendered as markup");
    wait_text(
        c,
        "[data-region=task-state]",
        |t| t.contains("finished") && t.contains("exit code 0"),
        "the result",
    )
    .await;

    // The web terminal: type a command, see its output.
    c.goto(&format!("{base}/agents/{name}/terminal"))
        .await
        .unwrap();
    wait_text(
        c,
        "#term-status",
        |t| t.contains("connected"),
        "the terminal to connect",
    )
    .await;
    let input = c
        .find(Locator::Css(".xterm-helper-textarea"))
        .await
        .unwrap();
    input.send_keys("echo hi\n").await.unwrap();
    wait_text(
        c,
        ".xterm-rows",
        |t| t.lines().any(|l| l.trim() == "hi"),
        "`hi` from the shell",
    )
    .await;
    // The terminal's size reaches the shell, and follows the window.
    input.send_keys("echo SIZE $(stty size)\n").await.unwrap();
    let first = wait_text(
        c,
        ".xterm-rows",
        |t| last_size(t).is_some(),
        "the terminal's size",
    )
    .await;
    let first = last_size(&first).unwrap();
    assert!(first.0 > 10 && first.1 > 40, "{first:?}");
    c.set_window_size(900, 600).await.unwrap();
    input
        .send_keys("clear; echo SIZE $(stty size)\n")
        .await
        .unwrap();
    wait_text(
        c,
        ".xterm-rows",
        |t| last_size(t).is_some_and(|s| s.0 < first.0 && s.1 < first.1),
        "a smaller terminal after the window shrank",
    )
    .await;
    c.set_window_size(1366, 900).await.unwrap();

    // Leaving the page detaches: the shell keeps running, the agent's page lists it, and attaching
    // from there replays what it showed before.
    input.send_keys("echo before-$((6*7))\n").await.unwrap();
    wait_text(
        c,
        ".xterm-rows",
        |t| t.lines().any(|l| l.trim() == "before-42"),
        "the first page's output",
    )
    .await;
    c.goto(&format!("{base}/agents/{name}")).await.unwrap();
    let attach = wait_text(
        c,
        "[data-region=sessions]",
        |t| t.contains("Attach"),
        "the running session on the agent's page",
    )
    .await;
    assert!(attach.contains("started"), "{attach}");
    c.find(Locator::Css("[data-region=sessions] a.button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(
        c,
        ".xterm-rows",
        |t| t.lines().any(|l| l.trim() == "before-42"),
        "the earlier output, replayed",
    )
    .await;
    let input = c
        .find(Locator::Css(".xterm-helper-textarea"))
        .await
        .unwrap();
    input.send_keys("echo after-$((6*7))\n").await.unwrap();
    wait_text(
        c,
        ".xterm-rows",
        |t| t.lines().any(|l| l.trim() == "after-42"),
        "the same shell answering",
    )
    .await;
    // The shell ends when it exits, not before.
    input.send_keys("exit 7\n").await.unwrap();
    let api = Api::new(&hub);
    let shell = wait_for("the shell to end", Duration::from_secs(20), || async {
        let (_, tasks) = api.get(&format!("/api/v1/agents/{name}/tasks")).await;
        let shell = tasks
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["terminal"] == true)
            .expect("the terminal's task")
            .clone();
        (shell["state"] == "finished").then_some(shell)
    })
    .await;
    assert_eq!(
        shell["exit_code"], 7,
        "one shell, across both pages: {shell}"
    );
    c.goto(&format!("{base}/agents/{name}")).await.unwrap();

    // Screenshots for people (and the README).
    wait_text(
        c,
        "[data-region=tasks]",
        |t| t.contains("hello"),
        "the recent tasks",
    )
    .await;
    screenshot(c, "dashboard-agent.png").await;
    c.goto(&format!("{base}/")).await.unwrap();
    wait_text(
        c,
        "[data-region=fleet]",
        |t| t.contains(&name),
        "the fleet row",
    )
    .await;
    screenshot(c, "dashboard-fleet.png").await;

    // Forms without the session's CSRF token are refused, even with the session cookie.
    let cookies = c.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|k| k.name().starts_with("docker_agent_") && !k.name().ends_with("_login"))
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));
    let cookie = format!("{}={}", session.name(), session.value());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for body in ["", "csrf=forged"] {
        let r = http
            .post(format!("{base}/agents/{name}/stop"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "stop with {body:?}");
    }
    let r = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", hub.admin_token()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "a login without its CSRF token"
    );
    let r = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "no cookie, no fleet");
    let agent = hub.cli(&["status", &name, "--json"]).await;
    assert!(
        agent.ok().contains("\"ready\"") || agent.stdout.contains("READY"),
        "still running: {}",
        agent.stdout
    );

    // Stop, then destroy through the confirmation page.
    c.goto(&format!("{base}/agents/{name}")).await.unwrap();
    submit(c, &format!("form[action=\"/agents/{name}/stop\"]")).await;
    wait_text(
        c,
        "[data-region=state]",
        |t| t.contains("stopped"),
        "stopped",
    )
    .await;
    c.find(Locator::Css("a.danger"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(c, "h1", |t| t.starts_with("Destroy"), "the confirmation").await;
    c.find(Locator::Css("input[name=purge]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    submit(c, "form.stacked").await;
    wait_text(c, "h1", |t| t == "Fleet", "back on the fleet").await;
    assert!(!text_of(c, "main").await.contains(&name));

    // Logging out ends the session for good.
    submit(c, "form.logout").await;
    wait_text(
        c,
        ".login-box",
        |t| t.contains("Admin token"),
        "the login page after logout",
    )
    .await;
    let r = http
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "the old cookie after logout"
    );

    browser.close().await;
    hub.assert_nothing_left().await;
}
