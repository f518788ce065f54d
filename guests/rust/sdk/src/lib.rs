//! Write cdc-host transform components in Rust.
//!
//! A transform is a type implementing [`Transform`], exported with
//! [`export!`]:
//!
//! ```no_run
//! use cdc_guest::{Change, Config, Transform};
//!
//! struct DropDeletes;
//!
//! impl Transform for DropDeletes {
//!     fn init(_config: Config) -> Result<Self, String> {
//!         Ok(DropDeletes)
//!     }
//!     fn transform(&mut self, mut changes: Vec<Change>) -> Result<Vec<Change>, String> {
//!         changes.retain(|c| c.op != cdc_guest::Op::Delete);
//!         Ok(changes)
//!     }
//! }
//!
//! cdc_guest::export!(DropDeletes);
//! ```
//!
//! Built with `cargo build --target wasm32-wasip2 --release` (crate type
//! `cdylib`), that is a component cdc-host loads directly.
//!
//! The types ([`Change`], [`Value`], ...) are the ones `wit-bindgen` generates
//! from `wit/types.wit`; this crate adds small helpers on them
//! ([`Change::after_column`], [`Value::to_text`], ...), [`Config`] for the
//! `[transforms.config]` table, [`TableSet`] for `schema.table` patterns and
//! logging macros ([`info!`], ...) that write to the host's log.

mod change;
mod config;
mod tables;
pub mod testing;
mod text;

pub use config::Config;
pub use tables::TableSet;

/// The raw `wit-bindgen` bindings of the `cdc:pipeline/transform` world.
///
/// Most transforms need only the re-exports at the crate root. A transform
/// that wants to implement the generated `Guest` trait itself (no [`Transform`]
/// state handling) can use `cdc_guest::bindings::export_raw!(MyType)`.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "transform",
        // The export macro is used from the transform crates, not this one.
        pub_export_macro: true,
        default_bindings_module: "cdc_guest::bindings",
        export_macro_name: "export_raw",
        // The generated code names the runtime through this path, so transform
        // crates need no direct `wit-bindgen` dependency.
        runtime_path: "cdc_guest::__private::wit_bindgen::rt",
        // Lets tests (and transforms) compare changes and values.
        additional_derives: [PartialEq],
    });
}

// `runtime_path` above names this crate by its external name.
extern crate self as cdc_guest;

pub use bindings::cdc::pipeline::host::Level;
pub use bindings::cdc::pipeline::types::{
    Change, Column, Element, Interval, LogicalMessage, Op, OtherValue, PgArray, Row, TimeTz,
    TruncateOptions, Value,
};

/// The type oid of `text`, for values a transform replaces with text.
pub const TEXT_OID: u32 = 25;

/// A transform: built once per module instance from its configuration, then
/// called once per batch.
///
/// The host keeps one instance per configured transform and calls it from one
/// thread, so `&mut self` state (counters, caches) persists across batches of
/// that instance. It does not survive a trap: the host starts a new instance
/// and calls `init` again.
pub trait Transform: Sized + 'static {
    /// Parses the `[transforms.config]` table. An `Err` stops the host from
    /// starting and is shown to the operator, so say what is wrong.
    fn init(config: Config) -> Result<Self, String>;

    /// Transforms one batch (whole transactions, in commit order). Return the
    /// changes to pass on: the same, modified, fewer, more, or rerouted. An
    /// `Err` applies the transform's `on_error` policy to the whole batch.
    fn transform(&mut self, changes: Vec<Change>) -> Result<Vec<Change>, String>;
}

/// Exports a [`Transform`] type as the component's `transformer` interface.
///
/// Use it once, at the top level of a `cdylib` crate. It keeps the value
/// `init` returns in a static slot so later `transform` calls get it back.
#[macro_export]
macro_rules! export {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                // wasm32-wasip2 guests are single-threaded: this is one slot.
                static __CDC_GUEST_STATE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct __CdcGuestExport;

            impl $crate::bindings::exports::cdc::pipeline::transformer::Guest for __CdcGuestExport {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    __CDC_GUEST_STATE.with(|slot| $crate::__private::init::<$ty>(slot, config))
                }

                fn transform(
                    changes: ::std::vec::Vec<$crate::Change>,
                ) -> ::core::result::Result<::std::vec::Vec<$crate::Change>, ::std::string::String>
                {
                    __CDC_GUEST_STATE
                        .with(|slot| $crate::__private::transform::<$ty>(slot, changes))
                }
            }

    $crate::bindings::export_raw!(__CdcGuestExport with_types_in $crate::bindings);
        };
    };
}

/// Support for the macros; not a stable API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;

    pub use wit_bindgen;

    use crate::{Change, Config, Transform};

    pub fn init<T: Transform>(
        slot: &RefCell<Option<T>>,
        config: Vec<(String, String)>,
    ) -> Result<(), String> {
        // Drop any earlier instance first: a failed re-init must not leave the
        // old configuration running.
        *slot.borrow_mut() = None;
        let value = T::init(Config::new(config))?;
        *slot.borrow_mut() = Some(value);
        Ok(())
    }

    pub fn transform<T: Transform>(
        slot: &RefCell<Option<T>>,
        changes: Vec<Change>,
    ) -> Result<Vec<Change>, String> {
        match slot.borrow_mut().as_mut() {
            Some(t) => t.transform(changes),
            None => Err("transform called before a successful init".to_string()),
        }
    }
}

/// The server's name of a builtin type oid (`integer`, `timestamp with time zone`,
/// `text[]`, ...), `None` for other oids. Asks the host: call it from a transform,
/// not from a native unit test.
pub fn type_name(oid: u32) -> Option<String> {
    bindings::cdc::pipeline::host::type_name(oid)
}

/// The replication origin of the transaction that committed at `commit_lsn` (a change's
/// `commit_lsn`): the origin name another node's logical replication applied it through
/// (a subscription's is `pg_<oid>`); `None` for a transaction made on this server, a
/// snapshot row, or a position not in the batch being transformed. See also
/// [`Change::origin`].
///
/// Outside wasm (unit tests on the build machine) there is no host: always `None`.
pub fn origin(commit_lsn: u64) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return bindings::cdc::pipeline::host::origin(commit_lsn);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = commit_lsn;
        None
    }
}

/// Writes `message` to the host's log at `level`, tagged with the module's
/// name. Prefer the macros ([`info!`], ...).
///
/// Outside wasm (unit tests on the build machine) there is no host, so the
/// line goes to stderr instead of calling an import that does not exist.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::cdc::pipeline::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// `format!`-style logging to the host at a given [`Level`].
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::log($level, &::std::format!($($arg)+))
    };
}

/// `format!`-style logging to the host at trace level.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Trace, $($arg)+) };
}

/// `format!`-style logging to the host at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Debug, $($arg)+) };
}

/// `format!`-style logging to the host at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Info, $($arg)+) };
}

/// `format!`-style logging to the host at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Warn, $($arg)+) };
}

/// `format!`-style logging to the host at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Error, $($arg)+) };
}
