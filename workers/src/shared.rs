//! The shared memory regions a worker was handed: [`shared`].

use std::collections::HashMap;
use std::sync::Mutex;

use procwire_rpc::shm::{Region, ShmError};

/// The shared region named `name` that the supervisor (a `[shared.NAME]` in the manifest,
/// listed by the worker's pool) or a parent (`Region::pass_to`) handed to this process.
///
/// The first call maps it ([`Region::from_env`]: the descriptor is checked to be an
/// inherited, sealed memfd); later calls return the same mapping. It stays mapped until the
/// process exits, hence the `'static`: primitives opened in it can live anywhere.
///
/// ```no_run
/// use procwire_rpc::shm::RobustMutex;
///
/// # fn main() -> Result<(), procwire_rpc::shm::ShmError> {
/// let region = procwire_workers::shared("counters")?;
/// let hits = RobustMutex::<u64>::open(region, 0)?;
/// hits.lock()?.recover(|_| {})?.update(|n| *n += 1);
/// # Ok(()) }
/// ```
pub fn shared(name: &str) -> Result<&'static Region, ShmError> {
    static MAPPED: Mutex<Option<HashMap<String, &'static Region>>> = Mutex::new(None);
    let mut mapped = MAPPED.lock().unwrap_or_else(|e| e.into_inner());
    let mapped = mapped.get_or_insert_with(HashMap::new);
    if let Some(region) = mapped.get(name) {
        return Ok(region);
    }
    let region: &'static Region = Box::leak(Box::new(Region::from_env(name)?));
    mapped.insert(name.to_owned(), region);
    Ok(region)
}
