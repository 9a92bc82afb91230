//! The `switchyard` command itself: the app registry behind `--help`, `services`, `up`
//! without an app, and `rebuild-query` keeping to `MIGRATE_ON_START`.

use crate::support;

use support::process;

#[test]
fn help_lists_the_services_by_app() {
    let out = std::process::Command::new(process::BIN)
        .arg("--help")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for app in switchyard_registry::APPS {
        assert!(text.contains(&format!("{} (", app.name)), "{text}");
    }
    for r in switchyard_registry::all() {
        assert!(
            text.contains(&switchyard_registry::display_name(&r)),
            "{} missing from --help: {text}",
            r.qualified()
        );
    }
}

#[test]
fn services_check_accepts_registry_names_only() {
    let (status, _) = process::run(&["services", "--check", "posts"], &[]);
    assert!(status.success());
    let (status, _) = process::run(&["services", "--check", "blog/query"], &[]);
    assert!(status.success());
    let (status, stderr) = process::run(&["services", "--check", "nonsense"], &[]);
    assert!(!status.success());
    assert!(stderr.contains("posts"), "lists the services: {stderr}");
}

#[test]
fn up_without_an_app_or_with_an_unknown_one_lists_the_apps() {
    for args in [&["up"][..], &["up", "nonsense"][..]] {
        let (status, stderr) = process::run(args, &[]);
        assert!(!status.success(), "{args:?}");
        for app in switchyard_registry::APPS {
            assert!(stderr.contains(app.name), "{args:?}: {stderr}");
        }
    }
}

#[tokio::test]
async fn rebuild_query_does_not_migrate_when_migrate_on_start_is_off() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("query");
    let data_dir = data.display().to_string();
    let (status, stderr) = process::run(
        &["rebuild-query"],
        &[
            ("DATA_DIR", data_dir.as_str()),
            ("MIGRATE_ON_START", "false"),
            ("EVENT_BUS_URL", "http://127.0.0.1:9"),
        ],
    );
    assert!(
        !status.success(),
        "an unmigrated database cannot be rebuilt"
    );
    assert!(
        stderr.contains("no such table"),
        "it fails on the missing schema, not later: {stderr}"
    );
    // Nothing was created behind the operator's back.
    let db = switchyard_kit::Db::connect(&format!("sqlite://{}/query.db", data.display()))
        .await
        .expect("open");
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(db.pool())
            .await
            .expect("tables");
    assert!(
        !tables.iter().any(|t| t == "posts"),
        "migrated anyway: {tables:?}"
    );
    db.close().await;
}

/// Every environment variable the code reads is in the README's table.
#[test]
fn every_environment_variable_is_documented_in_the_readme() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let pattern = regex::Regex::new(
        r#"(?:parse_or|required|millis_or|raw|list_or)(?:::<[^>]*>)?\(\s*"([A-Z][A-Z0-9_]+)"|env = "([A-Z][A-Z0-9_]+)""#,
    )
    .expect("regex");
    let mut names = std::collections::BTreeSet::new();
    let mut stack: Vec<std::path::PathBuf> = ["platform", "services", "registry", "cli/src"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
                stack.push(entry.path());
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("source");
            for c in pattern.captures_iter(&text) {
                if let Some(m) = c.get(1).or_else(|| c.get(2)) {
                    names.insert(m.as_str().to_string());
                }
            }
        }
    }
    assert!(
        names.contains("PORT") && names.contains("OPS_PORT"),
        "{names:?}"
    );
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !readme.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "not in the README: {missing:?}");
}
