//! Helpers for statements generated at run time (multi-row inserts, `IN (...)` lists).
//!
//! Only placeholders and fixed column lists are ever interpolated, never values. The one place
//! the SQL text differs by backend is the placeholder: SQLite treats `$N` as a *named* parameter
//! and resolves names by a linear scan, so a statement with thousands of `$N` costs quadratic
//! time (measured in the ledger: 2.4 s to insert 8,190 transfers). Anonymous `?` parameters are
//! numbered in order of appearance at no cost; generated statements bind in that order, so `?`
//! is equivalent there.

use sqlx::AnyConnection;

/// Whether `conn` is a SQLite connection.
pub fn is_sqlite(conn: &AnyConnection) -> bool {
    conn.backend_name() == "SQLite"
}

/// Placeholder `number` (1-based) of a generated statement.
pub fn param(sqlite: bool, number: usize) -> String {
    if sqlite {
        "?".to_owned()
    } else {
        format!("${number}")
    }
}

/// `$first, $first+1, ...` (or `?, ?, ...` on SQLite) for `n` parameters.
pub fn placeholders(sqlite: bool, first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| param(sqlite, i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, ..., $k), ($k+1, ...), ...` for `rows` rows of `cols` parameters.
pub fn row_placeholders(sqlite: bool, rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(sqlite, r * cols + 1, cols)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_by_backend() {
        assert_eq!(row_placeholders(false, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(row_placeholders(true, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(placeholders(false, 3, 2), "$3, $4");
    }
}
