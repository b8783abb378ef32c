//! Masking of result values: by source column (`schema.table.column` globs,
//! resolved from RowDescription through the catalog; computed columns of
//! statements reading a masked table; view columns by what the view reads)
//! and by value detectors, with the rule's strategy (redact, partial,
//! hash). DataRow and COPY OUT data, notices, errors, notifications and
//! recorded parameters are rewritten; only counts are reported.

mod binary;
mod columns;
mod key;
mod plan;
mod value;

pub(crate) use columns::{BaseRef, ColumnInfo, ResultColumns, Source, Touches};
pub use key::{MASK_KEY_FILE, MaskKey, MaskKeyError};
pub(crate) use plan::{MaskCounts, Masks, RowPlan};
pub(crate) use value::{Format, text_of};
