//! Why a fetch gave no kernel: [`FetchError`], as the rest of bpfmatrix sees it, and
//! [`Unreachable`], which a source raises anywhere in its work when the place it
//! fetches from cannot be reached from this machine.

use std::fmt;

/// Why a fetch gave no kernel.
#[derive(Debug)]
pub enum FetchError {
    /// The source cannot be reached from this machine; the text says why and what
    /// to do instead.
    Unavailable(String),
    /// Anything else: must be shown, never taken for "unavailable".
    Failed(anyhow::Error),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Unavailable(why) => write!(f, "unavailable: {why}"),
            FetchError::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for FetchError {}

impl FetchError {
    /// Sorts an error from the fetching code: an [`Unreachable`] anywhere in its
    /// chain makes it [`FetchError::Unavailable`].
    pub(crate) fn classify(e: anyhow::Error) -> FetchError {
        match e.chain().find_map(|c| c.downcast_ref::<Unreachable>()) {
            Some(Unreachable(why)) => FetchError::Unavailable(why.clone()),
            None => FetchError::Failed(e),
        }
    }

    /// As an [`anyhow::Error`], keeping a failure's context chain.
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            FetchError::Unavailable(why) => anyhow::anyhow!("{why}"),
            FetchError::Failed(e) => e,
        }
    }
}

/// Raised inside the fetching code when the source cannot be reached; becomes
/// [`FetchError::Unavailable`].
#[derive(Debug)]
pub(crate) struct Unreachable(pub String);

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_anywhere_in_the_chain_means_unavailable() {
        let e = anyhow::Error::from(Unreachable("no route".into())).context("downloading");
        assert!(matches!(FetchError::classify(e), FetchError::Unavailable(w) if w == "no route"));
        let e = anyhow::anyhow!("checksum mismatch");
        assert!(matches!(FetchError::classify(e), FetchError::Failed(_)));
    }
}
