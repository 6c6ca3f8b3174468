//! In-process mode: a handler exported from a `cdylib` behind a small, versioned C ABI,
//! which `runner --lib PATH.so` loads and calls with the same envelope as a bootstrap.
//!
//! The contract (this module is its one definition):
//! - `uint32_t immortal_abi_version(void)` returns [`ABI_VERSION`];
//! - `int32_t immortal_invoke(const uint8_t *envelope, size_t len, Buffer *out)` takes
//!   the envelope JSON and fills `out` with the response JSON or the error document;
//!   the return value is a [`Status`];
//! - `void immortal_free(Buffer)` releases `out`.
//!
//! Panics never cross the boundary: they become a function error.

/// The ABI version; bumped on any change to the symbols or their meaning.
pub const ABI_VERSION: u32 = 1;
/// Symbol returning [`ABI_VERSION`].
pub const VERSION_SYMBOL: &[u8] = b"immortal_abi_version\0";
/// Symbol running one invocation.
pub const INVOKE_SYMBOL: &[u8] = b"immortal_invoke\0";
/// Symbol freeing a result buffer.
pub const FREE_SYMBOL: &[u8] = b"immortal_free\0";

/// Bytes handed across the boundary (a Rust `Vec<u8>` taken apart).
#[repr(C)]
#[derive(Debug)]
pub struct Buffer {
    /// Start of the bytes.
    pub ptr: *mut u8,
    /// Length.
    pub len: usize,
    /// Capacity (needed to free it).
    pub cap: usize,
}

impl Buffer {
    /// An empty buffer, for the caller to pass in.
    pub const fn empty() -> Self {
        Buffer {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        }
    }

    /// Gives up `bytes` to the other side.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        Buffer {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            cap: bytes.capacity(),
        }
    }
}

/// What `immortal_invoke` returns.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `out` holds the response JSON.
    Response = 0,
    /// `out` holds the function's error document.
    FunctionError = 1,
    /// The handler could not be initialised; `out` holds the error document.
    InitError = 2,
    /// The envelope could not be read; `out` holds the error document.
    BadEnvelope = 3,
}

impl Status {
    /// The status for a raw return value.
    pub fn from_raw(raw: i32) -> Option<Status> {
        [
            Status::Response,
            Status::FunctionError,
            Status::InitError,
            Status::BadEnvelope,
        ]
        .into_iter()
        .find(|s| *s as i32 == raw)
    }
}

/// Frees a buffer made by [`Buffer::from_vec`].
///
/// # Safety
/// `buffer` must come from `Buffer::from_vec` in this same library, and be freed once.
pub unsafe fn free(buffer: Buffer) {
    if !buffer.ptr.is_null() {
        // SAFETY: the caller guarantees the parts come from a Vec<u8> of this allocator.
        drop(unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.cap) });
    }
}

#[cfg(feature = "runtime")]
pub use export::HandlerCell;

#[cfg(feature = "runtime")]
mod export {
    use std::future::Future;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::{Arc, OnceLock};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::{Buffer, Status};
    use crate::container::NO_DEADLINE_SECS;
    use crate::envelope::Envelope;
    use crate::function_ref::{DEFAULT_MEMORY_MB, LATEST};
    use crate::handler::{Context, Error, Handler};

    /// The exported handler of a library, created on first use.
    pub struct HandlerCell<H> {
        state: OnceLock<Result<(tokio::runtime::Runtime, H), Error>>,
    }

    impl<H: Handler> Default for HandlerCell<H> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<H: Handler> HandlerCell<H> {
        /// An empty cell (for a `static`).
        pub const fn new() -> Self {
            HandlerCell { state: OnceLock::new() }
        }

        /// Runs one invocation for `immortal_invoke`.
        ///
        /// # Safety
        /// `envelope` must point to `len` readable bytes and `out` to a writable [`Buffer`].
        pub unsafe fn invoke<F, Fut>(&self, init: F, envelope: *const u8, len: usize, out: *mut Buffer) -> i32
        where
            F: FnOnce() -> Fut,
            Fut: Future<Output = Result<H, Error>>,
        {
            // SAFETY: guaranteed by the caller.
            let input = unsafe { std::slice::from_raw_parts(envelope, len) };
            let (status, bytes) = match catch_unwind(AssertUnwindSafe(|| self.call(init, input))) {
                Ok(result) => result,
                Err(panic) => (Status::FunctionError, panic_document(&panic)),
            };
            // SAFETY: guaranteed by the caller.
            unsafe { out.write(Buffer::from_vec(bytes)) };
            status as i32
        }

        fn call<F, Fut>(&self, init: F, input: &[u8]) -> (Status, Vec<u8>)
        where
            F: FnOnce() -> Fut,
            Fut: Future<Output = Result<H, Error>>,
        {
            let state = self.state.get_or_init(|| {
                crate::logging::init();
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| Error::new("Runtime.InitError", e.to_string()))?;
                let handler = runtime.block_on(init())?;
                Ok((runtime, handler))
            });
            let (runtime, handler) = match state {
                Ok(state) => state,
                Err(error) => return (Status::InitError, error.to_json().into_bytes()),
            };
            let envelope = match serde_json::from_slice::<Envelope>(input) {
                Ok(envelope) => envelope,
                Err(e) => {
                    return (
                        Status::BadEnvelope,
                        Error::new("Immortal.BadEnvelope", e.to_string()).to_json().into_bytes(),
                    )
                }
            };
            let event = match serde_json::from_str::<H::Event>(envelope.event.get()) {
                Ok(event) => event,
                Err(e) => {
                    let message =
                        format!("failed to deserialize the incoming data into the function's payload type: {e}");
                    return (
                        Status::FunctionError,
                        Error::new("Runtime.InvalidEvent", message).to_json().into_bytes(),
                    );
                }
            };
            let ctx = Context::in_process(lambda_context(&envelope), envelope.context.overflow.clone());
            match runtime.block_on(crate::runtime::invoke(handler, event, ctx, None)) {
                Ok(response) => match serde_json::to_vec(&response) {
                    Ok(bytes) => (Status::Response, bytes),
                    Err(e) => (
                        Status::FunctionError,
                        Error::new("Runtime.SerializationError", e.to_string())
                            .to_json()
                            .into_bytes(),
                    ),
                },
                Err(err) => (Status::FunctionError, err.to_json().into_bytes()),
            }
        }
    }

    /// The same document lambda_runtime reports for a panic in a bootstrap.
    fn panic_document(panic: &Box<dyn std::any::Any + Send>) -> Vec<u8> {
        let message = if let Some(msg) = panic.downcast_ref::<&str>() {
            format!("Lambda panicked: {msg}")
        } else if let Some(msg) = panic.downcast_ref::<String>() {
            format!("Lambda panicked: {msg}")
        } else {
            "Lambda panicked".to_owned()
        };
        Error::new(std::any::type_name_of_val(&panic), message)
            .to_json()
            .into_bytes()
    }

    /// What lambda_runtime would build from the Runtime API's headers and environment.
    fn lambda_context(envelope: &Envelope) -> lambda_runtime::Context {
        let ctx = &envelope.context;
        let mut lambda = lambda_runtime::Context::default();
        lambda.request_id = ctx.request_id.clone().unwrap_or_default();
        lambda.invoked_function_arn = ctx.invoked_function_arn.clone().unwrap_or_default();
        lambda.deadline = (SystemTime::now() + Duration::from_secs(NO_DEADLINE_SECS))
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        lambda.xray_trace_id = ctx.xray_trace_id.clone();
        lambda.client_context = ctx.client_context.clone().and_then(|v| serde_json::from_value(v).ok());
        lambda.identity = ctx.identity.clone().and_then(|v| serde_json::from_value(v).ok());
        lambda.tenant_id = ctx.tenant_id.clone();
        let config = lambda_runtime::Config {
            function_name: ctx.function_name.clone().unwrap_or_default(),
            memory: ctx.memory_limit_in_mb.unwrap_or(DEFAULT_MEMORY_MB) as i32,
            version: ctx.function_version.clone().unwrap_or_else(|| LATEST.into()),
            log_group: ctx.log_group_name.clone().unwrap_or_default(),
            log_stream: ctx.log_stream_name.clone().unwrap_or_default(),
        };
        lambda.env_config = Arc::new(config);
        lambda
    }
}

/// Exports a [`Handler`](crate::Handler) from a `cdylib` for `runner --lib`.
///
/// `$init` is an expression producing a future of `Result<Handler, Error>`; it runs once,
/// on the first invocation, like a bootstrap's initialisation.
///
/// ```
/// use immortal_handler_sdk::{Context, Error, Handler};
///
/// struct Echo;
///
/// impl Handler for Echo {
///     type Event = serde_json::Value;
///     type Response = serde_json::Value;
///
///     async fn handle(&self, event: serde_json::Value, _ctx: Context) -> Result<serde_json::Value, Error> {
///         Ok(event)
///     }
/// }
///
/// immortal_handler_sdk::export_handler!(Echo, async { Ok::<_, Error>(Echo) });
/// ```
#[cfg(feature = "runtime")]
#[macro_export]
macro_rules! export_handler {
    ($handler:ty, $init:expr) => {
        static IMMORTAL_HANDLER: $crate::ffi::HandlerCell<$handler> = $crate::ffi::HandlerCell::new();

        /// The handler ABI version this library speaks.
        #[no_mangle]
        pub extern "C" fn immortal_abi_version() -> u32 {
            $crate::ffi::ABI_VERSION
        }

        /// Runs one invocation; see `immortal_handler_sdk::ffi`.
        ///
        /// # Safety
        /// `envelope` must point to `len` readable bytes and `out` to a writable buffer.
        #[no_mangle]
        pub unsafe extern "C" fn immortal_invoke(
            envelope: *const u8,
            len: usize,
            out: *mut $crate::ffi::Buffer,
        ) -> i32 {
            unsafe { IMMORTAL_HANDLER.invoke(|| $init, envelope, len, out) }
        }

        /// Frees a buffer `immortal_invoke` filled.
        ///
        /// # Safety
        /// `buffer` must come from `immortal_invoke` of this library, freed once.
        #[no_mangle]
        pub unsafe extern "C" fn immortal_free(buffer: $crate::ffi::Buffer) {
            unsafe { $crate::ffi::free(buffer) }
        }
    };
}
