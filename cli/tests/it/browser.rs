//! The blog in real headless Chromium: create a post, add comments, watch their statuses
//! arrive without a reload; markup in user content stays text.

use crate::support;

use support::up::{Up, free_offset};
use support::webdriver::{self, Driver};
use support::{eventually, process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_posts_and_moderation_live() {
    if !webdriver::available() {
        switchyard_kit::testing::skip_or_fail(
            "chromium or chromedriver not installed (apt-get install chromium chromium-driver)",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let up = Up::start(dir.path(), free_offset(), process::free_port());
    // The page's own security headers.
    let page = reqwest::get(up.url()).await.expect("page");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    // Only the client's own assets are served.
    let probe = reqwest::get(format!("{}/../Cargo.toml", up.url()))
        .await
        .expect("probe");
    assert_eq!(probe.status(), 404);

    let driver = Driver::start().await;
    let s = driver.session().await;
    s.goto(&up.url()).await;
    s.script("window.__sameDocument = true; return 1;").await;

    let title = s.wait_for("#post-title").await;
    s.type_into(&title, "Hello from Chromium").await;
    let submit = s
        .find_all("#create-post button[type=submit]")
        .await
        .into_iter()
        .next()
        .expect("submit");
    s.click(&submit).await;
    let card = eventually("the post card", || async {
        for card in s.find_all("article.post-card").await {
            let titles = s.find_in(&card, ".post-title").await;
            if let Some(t) = titles.first()
                && s.text(t).await == "Hello from Chromium"
            {
                return Some(card);
            }
        }
        None
    })
    .await;

    let markup = "<img src=x onerror=alert(1)>";
    for text in ["Looks great", "I like orange juice", markup] {
        let input = s
            .find_in(&card, ".comment-input")
            .await
            .into_iter()
            .next()
            .expect("comment input");
        s.type_into(&input, text).await;
        let button = s
            .find_in(&card, ".comment-form button[type=submit]")
            .await
            .into_iter()
            .next()
            .expect("button");
        s.click(&button).await;
        // The form is ready again (cleared) before the next comment.
        eventually("the comment input is cleared", || async {
            let input = s
                .find_in(&card, ".comment-input")
                .await
                .into_iter()
                .next()?;
            let value = s
                .script(
                    "return document.querySelector('article.post-card .comment-input') ? 1 : 0;",
                )
                .await;
            let _ = value;
            (s.attribute(&input, "value")
                .await
                .unwrap_or_default()
                .is_empty())
            .then_some(())
        })
        .await;
    }

    // The statuses arrive by themselves: no reload.
    let statuses = eventually("approved and rejected comments shown", || async {
        let mut seen = Vec::new();
        for li in s.find_in(&card, "li[data-status]").await {
            seen.push((
                s.attribute(&li, "data-status").await.unwrap_or_default(),
                s.text(&li).await,
            ));
        }
        (seen.len() == 3 && seen.iter().all(|(status, _)| status != "pending")).then_some(seen)
    })
    .await;
    assert_eq!(
        statuses[0],
        ("approved".to_string(), "Looks great".to_string())
    );
    assert_eq!(
        statuses[1],
        (
            "rejected".to_string(),
            "This comment has been rejected".to_string()
        )
    );
    assert_eq!(
        statuses[2],
        ("approved".to_string(), markup.to_string()),
        "markup shows as text"
    );
    assert_eq!(
        s.script("return window.__sameDocument === true;").await,
        serde_json::json!(true),
        "the page was reloaded"
    );
    // The markup ran nothing and created no element.
    assert_eq!(s.find_in(&card, "img").await.len(), 0);
    assert_eq!(s.alert_text().await, None, "an alert opened");

    let shot = s.screenshot().await;
    assert!(shot.starts_with(b"\x89PNG"), "not a PNG");
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    std::fs::write(artifacts.join("browser-blog.png"), &shot).expect("screenshot");
    s.quit().await;
}
