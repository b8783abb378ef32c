//! What calling a function does, as far as its name tells: built-ins that
//! change state or reach outside the database get classes here; any other
//! function (not a PostgreSQL 15 built-in, or qualified with a schema other
//! than `pg_catalog`) is looked up in the server's catalog and classified
//! by its body before the statement is decided.

use std::{collections::HashSet, sync::LazyLock};

use crate::gate::StatementClass as C;

/// Every function name in PostgreSQL 15's `pg_catalog` (generated with
/// `select distinct proname from pg_proc where pronamespace =
/// 'pg_catalog'::regnamespace`).
static BUILTINS: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("builtin_functions.txt").lines().collect());

/// Functions whose call is `dangerous_function` (compared on the last name
/// part, lower-cased; every `dblink*` function too): they reach the
/// server's files, programs, other sessions, other servers or its
/// configuration, or read around masking (logical decoding).
const DANGEROUS: &[&str] = &[
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_dir",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "lo_import",
    "lo_export",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "set_config",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_peek_changes",
    "pg_logical_slot_peek_binary_changes",
    "pg_logical_emit_message",
    "pg_replication_origin_create",
    "pg_replication_origin_drop",
    "pg_replication_origin_advance",
    "pg_replication_origin_session_setup",
];

/// Large-object functions that create, change or remove one.
const LARGE_OBJECT: &[&str] = &[
    "lo_create",
    "lo_creat",
    "lo_from_bytea",
    "lo_put",
    "lowrite",
    "lo_truncate",
    "lo_truncate64",
    "lo_unlink",
    "lo_import",
];

/// Functions that take a lock other sessions wait for.
const LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
];

/// Other built-ins that change what the database holds.
const WRITES: &[&str] = &[
    "pg_import_system_collations",
    "brin_summarize_new_values",
    "brin_summarize_range",
    "brin_desummarize_range",
    "gin_clean_pending_list",
    "pg_stat_reset",
    "pg_stat_reset_shared",
    "pg_stat_reset_single_table_counters",
    "pg_stat_reset_single_function_counters",
    "pg_stat_reset_slru",
    "pg_stat_reset_replication_slot",
    "pg_stat_reset_subscription_stats",
    "pg_create_restore_point",
    "pg_drop_replication_slot",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_replication_slot_advance",
    "pg_logical_emit_message",
];

/// Functions whose arguments leave the statement's results for somewhere
/// masking cannot follow (a notification, a large object, a setting, a
/// sequence, the WAL, another server).
pub(super) fn moves_data(name: &str) -> bool {
    matches!(
        name,
        "pg_notify"
            | "lo_from_bytea"
            | "lo_put"
            | "lowrite"
            | "lo_import"
            | "set_config"
            | "setval"
            | "pg_logical_emit_message"
    ) || name.starts_with("dblink")
}

/// A function the classifier reads the arguments of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FunctionKind {
    SetConfig,
}

/// Whether calling `name` (possibly schema-qualified) is dangerous.
pub fn is_dangerous_function(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
    last.starts_with("dblink") || DANGEROUS.contains(&last.as_str())
}

/// The classes a call of the built-in `name` (lower-cased) carries.
pub(super) fn classes_of(name: &str) -> &'static [C] {
    if is_dangerous_function(name) {
        if LARGE_OBJECT.contains(&name) {
            return &[C::DangerousFunction, C::Write, C::LargeObject];
        }
        if WRITES.contains(&name) {
            return &[C::DangerousFunction, C::Write];
        }
        return &[C::DangerousFunction];
    }
    match name {
        n if LARGE_OBJECT.contains(&n) => &[C::Write, C::LargeObject],
        "nextval" | "setval" => &[C::Write, C::Sequence],
        "pg_notify" => &[C::Notify],
        n if LOCKS.contains(&n) => &[C::Lock],
        n if WRITES.contains(&n) => &[C::Write],
        _ => &[],
    }
}

/// Functions whose arguments matter.
pub(super) fn kind(name: &str) -> Option<FunctionKind> {
    (name == "set_config").then_some(FunctionKind::SetConfig)
}

/// The name to look up in the catalog for a call of `parts` (the name as
/// written: `f`, `s.f`, `db.s.f`), or `None` for a PostgreSQL built-in.
pub(super) fn needs_lookup(parts: &[&str]) -> Option<String> {
    match parts {
        [] => None,
        [.., schema, _] if *schema == "pg_catalog" => None,
        [name] if BUILTINS.contains(name) => None,
        [name] => Some((*name).to_string()),
        [.., schema, name] => Some(format!("{schema}.{name}")),
    }
}

/// Settings that make transactions read-only.
pub(super) fn is_read_only_setting(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    n == "default_transaction_read_only" || n == "transaction_read_only"
}

/// Whether a setting's value turns it on (`on`, `true`, `1`, ...).
pub(super) fn is_on(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "on" | "true" | "t" | "yes" | "y" | "1"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_need_no_lookup_and_others_do() {
        assert_eq!(needs_lookup(&["count"]), None);
        assert_eq!(needs_lookup(&["pg_catalog", "anything"]), None);
        assert_eq!(needs_lookup(&["wipe"]), Some("wipe".into()));
        assert_eq!(
            needs_lookup(&["public", "lower"]),
            Some("public.lower".into())
        );
        assert_eq!(
            needs_lookup(&["Lower"]),
            Some("Lower".into()),
            "quoted names keep their case"
        );
        assert!(classes_of("lo_from_bytea").contains(&C::LargeObject));
        assert!(classes_of("lo_import").contains(&C::DangerousFunction));
        assert_eq!(classes_of("setval"), &[C::Write, C::Sequence]);
        assert_eq!(classes_of("lower"), &[] as &[C]);
    }
}
