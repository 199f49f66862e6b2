//! schema/README.md's column table lists every column of the flat schema with its JSON path.

use verdict_schema::flat_schema::{COLUMN_PATHS, log_entry_schema};

#[test]
fn readme_table_matches_the_schema() {
    let readme = include_str!("../README.md");
    let schema = log_entry_schema();
    assert_eq!(schema.fields().len(), COLUMN_PATHS.len());
    for (field, (name, _)) in schema.fields().iter().zip(COLUMN_PATHS) {
        assert_eq!(field.name(), name, "COLUMN_PATHS follows schema order");
        let row = format!("| `{name}` |");
        assert!(
            readme.contains(&row),
            "README lacks a row for column {name}"
        );
    }
}

#[test]
fn readme_loss_table_matches_the_loss_schema() {
    use verdict_schema::flat_loss_schema::{LOSS_COLUMN_PATHS, loss_entry_schema};
    let readme = include_str!("../README.md");
    let schema = loss_entry_schema();
    assert_eq!(schema.fields().len(), LOSS_COLUMN_PATHS.len());
    let envelope = log_entry_schema();
    for (i, (field, (name, _))) in schema.fields().iter().zip(LOSS_COLUMN_PATHS).enumerate() {
        assert_eq!(field.name(), name, "LOSS_COLUMN_PATHS follows schema order");
        if i < 10 {
            assert_eq!(
                field.as_ref(),
                envelope.field(i),
                "envelope columns are shared"
            );
        } else {
            let row = format!("| `{name}` |");
            assert!(
                readme.contains(&row),
                "README lacks a row for loss column {name}"
            );
        }
    }
}
