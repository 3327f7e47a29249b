//! ADD's downloads and git resolutions, made once while computing cache keys and handed to
//! the step that writes them.

use super::add::{self, AddError};
use super::git;

/// Downloads made (and git refs resolved) while computing ADD cache keys, handed to the
/// step that needs them.
#[derive(Default)]
pub(crate) struct Downloads {
    dir: Option<crate::store::ScratchDir>,
    by_url: std::collections::HashMap<String, add::Fetched>,
    /// git sources by their text, to the commit they resolved to.
    pub(super) commits: std::collections::HashMap<String, git::Resolved>,
}

impl Downloads {
    pub(super) fn fetch(
        &mut self,
        fetch: &super::Fetch,
        store: &crate::store::Store,
        url: &str,
    ) -> Result<add::Fetched, AddError> {
        if let Some(f) = self.by_url.get(url) {
            return Ok(f.clone());
        }
        if self.dir.is_none() {
            let dir = store.scratch_dir("fetch-").map_err(AddError::DownloadDir)?;
            self.dir = Some(dir);
        }
        let dir = self.dir.as_ref().expect("just made").path();
        let got = add::download(fetch, url, dir, &format!("{}", self.by_url.len()))?;
        self.by_url.insert(url.to_string(), got.clone());
        Ok(got)
    }

    /// The download of `url`, if one was made (it stays on disk until the build ends).
    pub(super) fn get(&self, url: &str) -> Option<add::Fetched> {
        self.by_url.get(url).cloned()
    }
}
