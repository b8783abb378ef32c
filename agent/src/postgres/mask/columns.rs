//! Where a result set's columns come from, as masking needs it: each
//! column's source (RowDescription table OID + attnum resolved through the
//! catalog), type and format, and the relations the statement reads, for
//! columns that have no source of their own.

use std::sync::Arc;

use super::value::{Format, Repr};
use crate::policy::ColumnGlob;

/// A relation, or one of its columns, that a statement or view reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BaseRef {
    /// `None`: written without a schema and not found in the catalog.
    schema: Option<String>,
    table: String,
    /// `None`: the whole relation (a table named in FROM, a whole-row reference).
    column: Option<String>,
}

impl BaseRef {
    /// The relation `schema.table`.
    pub(crate) fn relation(schema: &str, table: &str) -> BaseRef {
        BaseRef {
            schema: Some(schema.to_string()),
            table: table.to_string(),
            column: None,
        }
    }

    /// A relation named without a schema.
    pub(crate) fn unqualified(table: &str) -> BaseRef {
        BaseRef {
            schema: None,
            table: table.to_string(),
            column: None,
        }
    }

    /// The column `schema.table.column`.
    pub(crate) fn column(schema: &str, table: &str, column: &str) -> BaseRef {
        BaseRef {
            schema: Some(schema.to_string()),
            table: table.to_string(),
            column: Some(column.to_string()),
        }
    }

    /// Whether `glob` masks (part of) what this names. The planner's
    /// statistics (`pg_stats` and the like) hold sample values of every
    /// column, so any column rule covers them.
    pub(crate) fn covered_by(&self, glob: &ColumnGlob) -> bool {
        if self.schema.as_deref().is_none_or(|s| s == "pg_catalog")
            && STATISTICS.contains(&self.table.as_str())
        {
            return true;
        }
        match (&self.schema, &self.column) {
            (Some(s), Some(c)) => glob.matches(&format!("{s}.{}.{c}", self.table)),
            (schema, _) => glob.covers_relation(schema.as_deref(), &self.table),
        }
    }
}

/// Catalogs and views whose columns hold sample values of other tables'
/// columns (`most_common_vals`, `histogram_bounds`, `stavalues1`...).
const STATISTICS: &[&str] = &[
    "pg_statistic",
    "pg_stats",
    "pg_statistic_ext_data",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
];

/// Whether a result column `schema.table.column` holds sample values of
/// other tables' columns: with column rules in force it is masked for every
/// table (which column a row describes is in another column of the row).
pub(crate) fn holds_sample_values(name: &str) -> bool {
    let mut parts = name.splitn(3, '.');
    let (Some("pg_catalog"), Some(table), Some(column)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    STATISTICS.contains(&table)
        && (column.starts_with("stavalues")
            || matches!(
                column,
                "most_common_vals"
                    | "histogram_bounds"
                    | "most_common_elems"
                    | "stxdmcv"
                    | "stxdexpr"
            ))
}

impl BaseRef {
    /// Like [`BaseRef::covered_by`] for what a view column reads: a
    /// statistics relation there counts only through its sample columns.
    pub(crate) fn column_covered_by(&self, glob: &ColumnGlob) -> bool {
        let stats = self.schema.as_deref() == Some("pg_catalog")
            && STATISTICS.contains(&self.table.as_str());
        if stats {
            return self
                .column
                .as_ref()
                .is_some_and(|c| holds_sample_values(&format!("pg_catalog.{}.{c}", self.table)));
        }
        self.covered_by(glob)
    }
}

/// The relations a statement reads (views expanded to what they read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Touches {
    Relations(Vec<BaseRef>),
    /// Unknown (a FETCH, an EXECUTE, a failed catalog lookup): anything.
    Any,
}

impl Touches {
    /// The given relations.
    pub(crate) fn relations(refs: Vec<BaseRef>) -> Touches {
        Touches::Relations(refs)
    }

    /// Whether any of `globs` names a column of something read.
    pub(crate) fn covered_by(&self, globs: &[ColumnGlob]) -> bool {
        match self {
            Touches::Any => !globs.is_empty(),
            Touches::Relations(refs) => refs.iter().any(|r| globs.iter().any(|g| r.covered_by(g))),
        }
    }
}

/// Where one result column's values come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A table or view column (`schema.table.column`); for a view column,
    /// also every column the view reads (PostgreSQL reports the view, not
    /// the tables behind it).
    Column { name: String, reads: Arc<[BaseRef]> },
    /// No source column: an expression, a whole-row value, a UNION, a
    /// system column.
    Computed,
    /// Not known: no description, or the catalog lookup failed.
    Unknown,
}

/// One result column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColumnInfo {
    pub(crate) source: Source,
    /// `None`: not described.
    pub(crate) type_oid: Option<u32>,
    pub(crate) format: Format,
}

impl ColumnInfo {
    /// A column nothing is known about, not even its format: whatever it
    /// holds is masked (NULL) when any masking applies.
    pub(crate) fn unknown() -> ColumnInfo {
        ColumnInfo {
            source: Source::Unknown,
            type_oid: None,
            format: Format::Binary,
        }
    }

    pub(crate) fn repr(&self) -> Repr {
        Repr::of(self.type_oid, self.format)
    }
}

/// A result set's columns and the statement's reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResultColumns {
    columns: Vec<ColumnInfo>,
    /// How values past `columns` are taken (a row longer than described,
    /// or a result nobody described).
    rest: ColumnInfo,
    touches: Touches,
}

impl ResultColumns {
    /// Described columns.
    pub(crate) fn new(columns: Vec<ColumnInfo>, touches: Touches) -> ResultColumns {
        ResultColumns {
            columns,
            rest: ColumnInfo::unknown(),
            touches,
        }
    }

    /// Columns nobody described, with the formats a Bind asked for
    /// (none: text; one: all; else one per column).
    pub(crate) fn undescribed(formats: &[i16]) -> ResultColumns {
        let unknown = |code: i16| ColumnInfo {
            format: Format::from_code(code),
            ..ColumnInfo::unknown()
        };
        let (columns, rest) = match formats {
            [] => (vec![], unknown(0)),
            [one] => (vec![], unknown(*one)),
            many => (
                many.iter().map(|f| unknown(*f)).collect(),
                ColumnInfo::unknown(),
            ),
        };
        ResultColumns {
            columns,
            rest,
            touches: Touches::Any,
        }
    }

    pub(crate) fn columns(&self) -> &[ColumnInfo] {
        &self.columns
    }

    pub(crate) fn rest(&self) -> &ColumnInfo {
        &self.rest
    }

    pub(crate) fn touches(&self) -> &Touches {
        &self.touches
    }

    /// The same columns sent in the formats a Bind asked for.
    pub(crate) fn with_formats(&self, formats: &[i16]) -> ResultColumns {
        let mut out = self.clone();
        for (i, c) in out.columns.iter_mut().enumerate() {
            let code = match formats {
                [] => 0,
                [one] => *one,
                many => many.get(i).copied().unwrap_or(1),
            };
            c.format = Format::from_code(code);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{MaskSpec, Strategy};

    #[test]
    fn references_match_globs_by_relation_or_column() {
        let spec = MaskSpec::new(&["public.users.email".into()], &[], Strategy::Redact).unwrap();
        let g = &spec.columns()[0];
        assert!(BaseRef::relation("public", "users").covered_by(g));
        assert!(BaseRef::unqualified("users").covered_by(g));
        assert!(!BaseRef::relation("audit", "users").covered_by(g));
        assert!(BaseRef::column("public", "users", "email").covered_by(g));
        assert!(!BaseRef::column("public", "users", "id").covered_by(g));
        assert!(Touches::Any.covered_by(spec.columns()));
        assert!(!Touches::Any.covered_by(&[]));
    }

    #[test]
    fn bind_formats_apply_per_column() {
        let c = ColumnInfo {
            source: Source::Computed,
            type_oid: Some(25),
            format: Format::Text,
        };
        let cols = ResultColumns::new(vec![c.clone(), c], Touches::Any);
        let bin = cols.with_formats(&[1]);
        assert!(bin.columns().iter().all(|c| c.format == Format::Binary));
        let mixed = cols.with_formats(&[0, 1]);
        assert_eq!(mixed.columns()[0].format, Format::Text);
        assert_eq!(mixed.columns()[1].format, Format::Binary);
        assert_eq!(ResultColumns::undescribed(&[]).rest().format, Format::Text);
        assert_eq!(
            ResultColumns::undescribed(&[1]).rest().format,
            Format::Binary
        );
        let two = ResultColumns::undescribed(&[0, 1]);
        assert_eq!(two.columns()[1].format, Format::Binary);
        assert_eq!(two.rest().format, Format::Binary);
    }
}

#[cfg(test)]
mod statistics_tests {
    use super::*;

    #[test]
    fn statistics_sample_values_are_recognised() {
        assert!(holds_sample_values("pg_catalog.pg_stats.most_common_vals"));
        assert!(holds_sample_values("pg_catalog.pg_stats.histogram_bounds"));
        assert!(holds_sample_values("pg_catalog.pg_statistic.stavalues3"));
        assert!(!holds_sample_values("pg_catalog.pg_stats.attname"));
        assert!(!holds_sample_values("public.pg_stats.most_common_vals"));
    }
}
