//! The documents a filter matches: the payload indexes' candidates, completed by checking
//! metadata where the indexes cannot decide.

use roaring::RoaringBitmap;

use crate::error::Result;
use crate::filter::Filter;
use crate::payload::Candidates;
use crate::storage::MetadataSource;

/// Internal ids of every document matching `filter`, given what the payload indexes know of
/// them (`candidates`): exact bitmaps are taken as they are; otherwise the candidates (or every
/// document) are checked on their metadata, read from `docs`.
pub(crate) fn resolve(
    candidates: Candidates,
    filter: &Filter,
    docs: &dyn MetadataSource,
) -> Result<RoaringBitmap> {
    match candidates {
        Candidates::Exact(ids) => Ok(ids),
        Candidates::Superset(candidates) => {
            let mut ids = RoaringBitmap::new();
            for id in &candidates {
                if docs.metadata(id)?.is_some_and(|m| filter.matches(&m)) {
                    ids.insert(id);
                }
            }
            Ok(ids)
        }
        Candidates::Unknown => {
            let mut ids = RoaringBitmap::new();
            docs.for_each_metadata(&mut |id, metadata| {
                if filter.matches(metadata) {
                    ids.insert(id);
                }
                Ok(())
            })?;
            Ok(ids)
        }
    }
}
