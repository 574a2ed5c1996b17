//! The house rule of DESIGN §1/§7, checked on the source: doors translate
//! and never import one another; the core, the guard, the fleet, the store
//! and the model import no door; doors never reach the store (the guard is
//! the only writer).

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `crate::doors::NAME` a file names, with its line number.
fn door_imports(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).expect("source is readable");
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::doors::") {
            let tail = &rest[at + "crate::doors::".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push((i + 1, name));
            rest = tail;
        }
    }
    found
}

#[test]
fn no_door_imports_another_door() {
    let doors = src().join("doors");
    let mut bad = Vec::new();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&doors).expect("src/doors") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            names.push(path.file_name().unwrap().to_string_lossy().to_string());
        }
    }
    assert!(names.len() >= 3, "the doors: {names:?}");
    for door in &names {
        for file in sources(&doors.join(door)) {
            for (line, name) in door_imports(&file) {
                if &name != door {
                    bad.push(format!(
                        "{}:{line}: door {door} imports door {name}",
                        file.display()
                    ));
                }
            }
            // `super::` may not climb out of the door either.
            let text = std::fs::read_to_string(&file).unwrap();
            // How deep the file's module sits below the door's own module.
            let rel = file.strip_prefix(doors.join(door)).unwrap();
            let depth = rel.components().count() - usize::from(rel.ends_with("mod.rs"));
            let escape = "super::".repeat(depth + 1);
            for (i, l) in text.lines().enumerate() {
                if l.contains(&escape) {
                    bad.push(format!(
                        "{}:{}: climbs out of door {door}",
                        file.display(),
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_core_guard_fleet_store_and_model_import_no_door() {
    let mut bad = Vec::new();
    for layer in [
        "commands",
        "guard",
        "fleet",
        "store",
        "model",
        "recording",
        "mbap.rs",
        "sessions.rs",
        "sshkeys.rs",
    ] {
        let path = src().join(layer);
        let files = if path.is_dir() {
            sources(&path)
        } else {
            vec![path]
        };
        for file in files {
            for (line, name) in door_imports(&file) {
                bad.push(format!("{}:{line}: imports door {name}", file.display()));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn doors_never_reach_the_store() {
    let mut bad = Vec::new();
    for file in sources(&src().join("doors")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, l) in text.lines().enumerate() {
            if l.contains(".store()")
                || l.contains("crate::store::Store")
                || l.contains(".log().append")
            {
                bad.push(format!("{}:{}: {}", file.display(), i + 1, l.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "doors write only through the guard:\n{}",
        bad.join("\n")
    );
}

/// The check itself catches what it is for: a door that imports another.
#[test]
fn the_import_check_sees_a_door_import() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.rs");
    std::fs::write(
        &file,
        "use crate::doors::ssh::shell::Caller;\nuse crate::doors::admin;\n",
    )
    .unwrap();
    assert_eq!(
        door_imports(&file),
        vec![(1, "ssh".to_string()), (2, "admin".to_string())]
    );
}
