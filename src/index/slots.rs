//! The mapping every vector index keeps between its dense slots and the collection's ids:
//! slot → (internal id, UUID) and internal id → slot. A slot may be vacant (its document was
//! deleted but the slot is not reused yet): it then maps to [`VACANT`].

use std::collections::HashMap;

use uuid::Uuid;

use super::file::{FileReader, FileWriter};
use crate::error::Result;
use crate::types::InternalId;

/// The internal id of a vacant slot, and "no slot" in the reverse map.
pub const VACANT: u32 = u32::MAX;

/// Slot ↔ id maps of an index.
#[derive(Clone, Debug, Default)]
pub struct SlotIds {
    ids: Vec<InternalId>,
    uuids: Vec<Uuid>,
    /// Internal id → slot of every occupied slot. A map, not a vector indexed by id: ids are
    /// never reused, so after heavy churn they are sparse, and a damaged file cannot make a load
    /// allocate by the size of an id.
    slot_of: HashMap<InternalId, u32>,
    live: usize,
}

impl SlotIds {
    /// Number of slots, vacant or not.
    pub fn slots(&self) -> usize {
        self.ids.len()
    }

    /// Approximate bytes of memory the maps use.
    pub fn memory_bytes(&self) -> usize {
        // A hash-map entry costs its key and value plus about one control byte, at load ≤ 7/8.
        self.ids.capacity() * 4 + self.uuids.capacity() * 16 + self.slot_of.capacity() * 9
    }

    /// Makes room for `additional` more slots.
    pub fn reserve(&mut self, additional: usize) {
        self.ids.reserve(additional);
        self.uuids.reserve(additional);
        self.slot_of.reserve(additional);
    }

    /// Number of occupied slots.
    pub fn live(&self) -> usize {
        self.live
    }

    /// The slot holding internal id `id`.
    pub fn slot(&self, id: InternalId) -> Option<usize> {
        self.slot_of.get(&id).map(|&slot| slot as usize)
    }

    /// Internal id in `slot`, `None` if vacant.
    #[inline]
    pub fn id(&self, slot: usize) -> Option<InternalId> {
        Some(self.ids[slot]).filter(|&id| id != VACANT)
    }

    /// UUID of the document in `slot` (meaningless for a vacant slot).
    #[inline]
    pub fn uuid(&self, slot: usize) -> Uuid {
        self.uuids[slot]
    }

    /// Appends a slot for `id` and returns it.
    pub fn push(&mut self, id: InternalId, uuid: Uuid) -> usize {
        self.ids.push(VACANT);
        self.uuids.push(Uuid::nil());
        let slot = self.ids.len() - 1;
        self.assign(slot, id, uuid);
        slot
    }

    /// Puts `id` in `slot` (which must be vacant).
    pub fn assign(&mut self, slot: usize, id: InternalId, uuid: Uuid) {
        debug_assert_eq!(self.ids[slot], VACANT);
        self.slot_of.insert(id, slot as u32);
        self.ids[slot] = id;
        self.uuids[slot] = uuid;
        self.live += 1;
    }

    /// Replaces the UUID of an occupied slot.
    pub fn set_uuid(&mut self, slot: usize, uuid: Uuid) {
        self.uuids[slot] = uuid;
    }

    /// Makes `slot` vacant. If its document has meanwhile moved to another slot, that mapping
    /// stays.
    pub fn vacate(&mut self, slot: usize) {
        if let Some(id) = self.id(slot) {
            if self.slot_of.get(&id) == Some(&(slot as u32)) {
                self.slot_of.remove(&id);
            }
            self.ids[slot] = VACANT;
            self.live -= 1;
        }
    }

    /// Moves the last slot into `slot` (which must be vacant) and drops the last slot.
    pub fn swap_remove(&mut self, slot: usize) {
        let last = self.ids.len() - 1;
        if slot != last {
            if let Some(id) = self.id(last) {
                let uuid = self.uuids[last];
                self.vacate(last);
                self.assign(slot, id, uuid);
            }
        }
        self.ids.pop();
        self.uuids.pop();
    }

    /// Internal ids of every occupied slot, sorted.
    pub fn sorted_ids(&self) -> Vec<InternalId> {
        let mut ids: Vec<InternalId> = self
            .ids
            .iter()
            .copied()
            .filter(|&id| id != VACANT)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Writes the maps: `ids` then `uuids`, one per slot.
    pub fn write(&self, out: &mut FileWriter) -> Result<()> {
        out.write_u32s(self.ids.iter().copied())?;
        for uuid in &self.uuids {
            out.write(uuid.as_bytes())?;
        }
        Ok(())
    }

    /// Reads maps of `slots` slots written by [`SlotIds::write`], checking that no internal id
    /// appears twice.
    pub fn read(input: &mut FileReader, slots: usize) -> Result<SlotIds> {
        let ids = input.read_u32s(slots)?;
        input.ensure_remaining(slots as u64 * 16)?;
        let mut uuids = Vec::with_capacity(slots);
        let mut bytes = [0u8; 16];
        for _ in 0..slots {
            input.read(&mut bytes)?;
            uuids.push(Uuid::from_bytes(bytes));
        }
        let mut map = SlotIds {
            ids: vec![VACANT; slots],
            uuids,
            slot_of: HashMap::with_capacity(slots),
            live: 0,
        };
        for (slot, &id) in ids.iter().enumerate() {
            if id == VACANT {
                continue;
            }
            if map.slot_of.contains_key(&id) {
                return Err(input.corrupted(format!("internal id {id} appears in two slots")));
            }
            let uuid = map.uuids[slot];
            map.assign(slot, id, uuid);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_vacate_swap_remove() {
        let mut s = SlotIds::default();
        let a = s.push(10, Uuid::from_u128(1));
        let b = s.push(20, Uuid::from_u128(2));
        let c = s.push(30, Uuid::from_u128(3));
        assert_eq!((a, b, c), (0, 1, 2));
        s.vacate(a);
        assert_eq!(s.slot(10), None);
        assert_eq!(s.live(), 2);
        s.swap_remove(a);
        assert_eq!(s.slot(30), Some(0));
        assert_eq!(s.uuid(0), Uuid::from_u128(3));
        assert_eq!(s.slots(), 2);
        assert_eq!(s.sorted_ids(), vec![20, 30]);
    }
}
