//! Property tests of the pure parts: the debug-exit decoder, the DR7
//! encoder, the page walker (random page tables must never make it panic,
//! and it must agree with a plain reference walk), and the breakpoint table
//! against a model of what the guest should see.

use std::cell::RefCell;
use std::collections::BTreeMap;

use kvm::debug::breakpoints::{BreakpointTable, CodeMemory, Location, INT3};
use kvm::debug::debugregs::{encode, Condition, DebugRegisterSlot, Dr7};
use kvm::debug::decode::{decode_debug_exit, DebugCause, ProgrammedRegisters};
use kvm::debug::pagewalk::{translate, PagingRegisters, PhysicalMemory};
use kvm::debug::BreakType;
use kvm::error::Errno;
use kvm_bindings::kvm_debug_exit_arch;
use proptest::prelude::*;

const BS: u64 = 1 << 14;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn decoder_never_panics_and_names_only_what_dr6_and_dr7_say(
        exception in prop_oneof![Just(1u32), Just(3u32), any::<u32>()],
        dr6 in any::<u64>(),
        reported_dr7 in prop_oneof![Just(0u64), any::<u64>()],
        programmed_dr7 in any::<u64>(),
        addresses in any::<[u64; 4]>(),
    ) {
        let arch = kvm_debug_exit_arch { exception, pad: 0, pc: 0x1000, dr6, dr7: reported_dr7 };
        let event = decode_debug_exit(&arch, &ProgrammedRegisters { addresses, dr7: programmed_dr7 });
        // The programmed DR7 decides; the reported one only when nothing was programmed.
        let dr7 = Dr7(if programmed_dr7 != 0 || reported_dr7 == 0 { programmed_dr7 } else { reported_dr7 });
        let hit = |n: u8| dr6 & (1 << n) != 0 && dr7.enabled(n);
        let data = |n: u8| hit(n) && dr7.condition(n) != Condition::Execute;
        match event.cause {
            DebugCause::Int3 => prop_assert_eq!(exception, 3),
            DebugCause::Register(n) => {
                prop_assert_eq!(exception, 1);
                prop_assert!(hit(n));
                let watch = matches!(event.break_type, BreakType::WatchWrite | BreakType::WatchAccess);
                prop_assert_eq!(watch, dr7.condition(n) != Condition::Execute);
                if watch {
                    prop_assert!((0..n).all(|m| !data(m)), "the lowest data hit wins");
                    prop_assert_eq!(event.watch_addr, addresses[n as usize]);
                    prop_assert!([1, 2, 4, 8].contains(&event.watch_len));
                } else {
                    prop_assert!((0..4).all(|m| !data(m)), "a data hit wins over an execution hit");
                    prop_assert!((0..n).all(|m| !hit(m)), "the lowest execution hit wins");
                    prop_assert!(dr6 & BS == 0, "a step onto an execution breakpoint is a step");
                }
            }
            DebugCause::SingleStep => {
                prop_assert!(exception == 1 && dr6 & BS != 0);
                prop_assert!((0..4).all(|n| !data(n)), "no data hit besides the step");
            }
            DebugCause::Other => prop_assert!(exception != 3),
            DebugCause::Page => prop_assert!(false, "the decoder never makes page watchpoint events"),
        }
        prop_assert_eq!((event.dr6, event.dr7, event.exception), (dr6, reported_dr7, exception));
    }

    #[test]
    fn dr7_encoding_round_trips_every_slot(
        slots in proptest::array::uniform4(proptest::option::of((any::<u64>(), 0u8..4, 0usize..4)))
    ) {
        let conditions = [Condition::Execute, Condition::Write, Condition::Io, Condition::ReadWrite];
        let lens = [1u64, 2, 4, 8];
        let slots = slots.map(|s| s.map(|(addr, c, l)| DebugRegisterSlot { addr, condition: conditions[c as usize], len: lens[l] }));
        let (addrs, dr7) = encode(&slots);
        let dr7 = Dr7(dr7);
        for (n, slot) in slots.iter().enumerate() {
            let n8 = n as u8;
            match slot {
                None => { prop_assert!(!dr7.enabled(n8)); prop_assert_eq!(addrs[n], 0); }
                Some(s) => {
                    prop_assert!(dr7.enabled(n8));
                    prop_assert_eq!(addrs[n], s.addr);
                    prop_assert_eq!(dr7.condition(n8), s.condition);
                    let expected_len = if s.condition == Condition::Execute { 1 } else { s.len };
                    prop_assert_eq!(dr7.len(n8), expected_len);
                }
            }
        }
    }
}

/// 16 pages of guest-physical memory as u64 words.
struct RandomTables(Vec<u64>);

impl PhysicalMemory for RandomTables {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        self.0.get(usize::try_from(gpa / 8).ok()?).copied()
    }
}

/// A page-table word: usually an entry pointing into the 16 pages, with
/// random flags; sometimes anything at all.
fn table_word() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0u64..16, any::<u8>(), any::<bool>(), any::<bool>())
            .prop_map(|(page, flags, nx, present)| (page << 12) | u64::from(flags & 0x86) | u64::from(present) | (u64::from(nx) << 63)),
        1 => any::<u64>(),
    ]
}

fn paging_registers() -> impl Strategy<Value = PagingRegisters> {
    (0u64..16, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(root, paging, pae, long, la57, pse, nxe)| PagingRegisters {
            cr0: if paging { 0x8000_0001 } else { 1 },
            cr3: root << 12,
            cr4: u64::from(pse) << 4 | u64::from(pae) << 5 | u64::from(la57) << 12,
            efer: u64::from(long && pae) << 10 | u64::from(nxe) << 11,
        },
    )
}

/// (gpa, page size, writable, user, executable), walked the plain way.
fn reference_walk(mem: &RandomTables, regs: &PagingRegisters, gva: u64) -> Option<(u64, u64, bool, bool, bool)> {
    let bit = |value: u64, n: u32| value >> n & 1 == 1;
    if !bit(regs.cr0, 31) {
        return Some((gva & 0xffff_ffff, 4096, true, true, true));
    }
    let nxe = bit(regs.efer, 11);
    let (mut writable, mut user, mut executable) = (true, true, true);
    let mut account = |entry: u64, nx_bit: bool| {
        writable &= bit(entry, 1);
        user &= bit(entry, 2);
        executable &= !(nx_bit && nxe && bit(entry, 63));
    };
    let address = |entry: u64| entry & 0x000f_ffff_ffff_f000;
    if !bit(regs.cr4, 5) {
        // 32-bit paging: 4-byte entries, 10-bit indices.
        let gva = gva & 0xffff_ffff;
        let read32 = |gpa: u64| mem.read_u64(gpa & !7).map(|w| if gpa & 4 == 0 { w & 0xffff_ffff } else { w >> 32 });
        let pde = read32((regs.cr3 & 0xffff_f000) + (gva >> 22) * 4)?;
        if !bit(pde, 0) {
            return None;
        }
        account(pde, false);
        if bit(regs.cr4, 4) && bit(pde, 7) {
            let base = (pde & 0xffc0_0000) | ((pde >> 13 & 0xff) << 32);
            return Some((base + (gva & 0x3f_ffff), 4 << 20, writable, user, executable));
        }
        let pte = read32((pde & 0xffff_f000) + (gva >> 12 & 0x3ff) * 4)?;
        if !bit(pte, 0) {
            return None;
        }
        account(pte, false);
        return Some(((pte & 0xffff_f000) + (gva & 0xfff), 4096, writable, user, executable));
    }
    let (mut table, top_level, gva) = if bit(regs.efer, 10) {
        let levels = if bit(regs.cr4, 12) { 5 } else { 4 };
        let width = 12 + 9 * levels;
        let high = gva >> (width - 1);
        if high != 0 && high != u64::MAX >> (width - 1) {
            return None;
        }
        (address(regs.cr3), levels, gva)
    } else {
        // PAE: a four-entry PDPT with no permission bits, then 2 levels.
        let gva = gva & 0xffff_ffff;
        let pdpte = mem.read_u64((regs.cr3 & 0xffff_ffe0) + (gva >> 30) * 8)?;
        if !bit(pdpte, 0) {
            return None;
        }
        (address(pdpte), 2, gva)
    };
    for level in (1..=top_level).rev() {
        let shift = 12 + 9 * (level - 1);
        let entry = mem.read_u64(table + (gva >> shift & 511) * 8)?;
        if !bit(entry, 0) {
            return None;
        }
        account(entry, true);
        if level == 1 || (level <= 3 && bit(entry, 7)) {
            let size = 1u64 << shift;
            return Some(((address(entry) & !(size - 1)) | (gva & (size - 1)), size, writable, user, executable));
        }
        table = address(entry);
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8192))]

    #[test]
    fn page_walker_agrees_with_a_reference_walk_on_random_tables(
        words in proptest::collection::vec(table_word(), 16 * 512),
        regs in paging_registers(),
        gva in prop_oneof![0u64..0x20_0000, any::<u64>(), (0u64..512).prop_map(|i| 0xffff_ff80_0000_0000 | i << 12)],
    ) {
        let mem = RandomTables(words);
        let walked = translate(&regs, &mem, gva).ok().map(|t| (t.gpa, t.page_size, t.writable, t.user, t.executable));
        prop_assert_eq!(walked, reference_walk(&mem, &regs, gva));
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// `int3_unseen`: the vcpu would not report an int3 there (real mode on some hosts).
    InsertSoftware {
        gva: u8,
        int3_unseen: bool,
    },
    RemoveSoftware {
        gva: u8,
    },
    InsertHardware {
        kind: u8,
        addr: u8,
        len: u8,
    },
    RemoveHardware {
        kind: u8,
        addr: u8,
        len: u8,
    },
    /// The guest's page tables map `gva` from now on.
    Map {
        gva: u8,
    },
    /// The guest stores a byte (loading code over a breakpoint, say).
    GuestWrite {
        gpa: u8,
        byte: u8,
    },
    Rearm,
    RemoveAll,
    /// A vcpu starts stepping over the breakpoint at `gva`.
    Lift {
        gva: u8,
    },
    /// The oldest step over in progress is done.
    Land,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, any::<bool>()).prop_map(|(gva, int3_unseen)| Op::InsertSoftware { gva, int3_unseen }),
        3 => (0u8..12).prop_map(|gva| Op::RemoveSoftware { gva }),
        2 => (0u8..6, 0u8..4, 0u8..10).prop_map(|(kind, addr, len)| Op::InsertHardware { kind, addr, len }),
        2 => (0u8..6, 0u8..4, 0u8..10).prop_map(|(kind, addr, len)| Op::RemoveHardware { kind, addr, len }),
        1 => (0u8..12).prop_map(|gva| Op::Map { gva }),
        // A guest storing int3 itself over a breakpoint cannot be told from
        // the breakpoint (for any debugger): such stores are left out.
        2 => (0u8..64, any::<u8>()).prop_map(|(gpa, byte)| Op::GuestWrite { gpa, byte: if byte == INT3 { 0x90 } else { byte } }),
        1 => Just(Op::Rearm),
        1 => Just(Op::RemoveAll),
        2 => (0u8..12).prop_map(|gva| Op::Lift { gva }),
        2 => Just(Op::Land),
    ]
}

/// Twelve linear addresses over eight bytes: gvas 8-11 alias gvas 0-3.
fn gpa_of(gva: u8) -> u64 {
    u64::from(gva % 8) * 7
}

const KINDS: [BreakType; 6] = [
    BreakType::HardwareBreakpoint,
    BreakType::WatchWrite,
    BreakType::WatchRead,
    BreakType::WatchAccess,
    BreakType::SingleStep,
    BreakType::SoftwareBreakpoint,
];

/// The length the table keeps for a hardware entry of `kind`, or `None`
/// when it must refuse it (`EINVAL`).
fn stored_len(kind: BreakType, len: u8) -> Option<u64> {
    match kind {
        BreakType::HardwareBreakpoint => Some(1),
        BreakType::WatchWrite | BreakType::WatchRead | BreakType::WatchAccess if matches!(len, 1 | 2 | 4 | 8) => {
            Some(u64::from(len))
        }
        _ => None,
    }
}

fn registers_in_use(table: &BreakpointTable) -> usize {
    (0..4).filter(|&n| table.register(n).is_some()).count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn breakpoint_table_keeps_the_guests_view_of_memory(
        ops in proptest::collection::vec(op(), 1..60),
        initially_mapped in any::<[bool; 12]>(),
    ) {
        let initial: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(1) | 1).collect();
        let mem = RefCell::new(initial.clone());
        // The model: what the guest wrote last to each byte, and which gvas map.
        let mut guest = initial;
        let mut mapped = initially_mapped;
        let mut table = BreakpointTable::default();
        let mut refs: BTreeMap<u8, u32> = BTreeMap::new();
        // Hardware entries by (kind, address, stored length), with references.
        let mut hardware: BTreeMap<(u8, u64, u64), u32> = BTreeMap::new();
        // Patches being stepped over (by gpa), oldest first.
        let mut lifted: Vec<u64> = Vec::new();
        for op in ops {
            let translate = |gva: u64| if mapped[gva as usize] { Ok(gpa_of(gva as u8)) } else { Err(Errno::FAULT) };
            match op {
                Op::InsertSoftware { gva, int3_unseen } => {
                    let r = table.insert_software(u64::from(gva), translate(u64::from(gva)), int3_unseen, &mem);
                    match r {
                        Ok(()) => *refs.entry(gva).or_default() += 1,
                        // No register free for a breakpoint an int3 cannot keep.
                        Err(Errno::NOSPC) => prop_assert!(int3_unseen && registers_in_use(&table) == 4),
                        Err(e) => {
                            prop_assert_eq!(e, Errno::FAULT);
                            prop_assert!(!mapped[gva as usize] && !refs.contains_key(&gva));
                        }
                    }
                }
                Op::RemoveSoftware { gva } => {
                    let r = table.remove_software(u64::from(gva), &mem);
                    match refs.get_mut(&gva) {
                        Some(n) => {
                            prop_assert_eq!(r, Ok(()));
                            *n -= 1;
                            if *n == 0 { refs.remove(&gva); }
                        }
                        None => prop_assert_eq!(r, Err(Errno::NOENT)),
                    }
                }
                Op::InsertHardware { kind, addr, len } => {
                    let in_use = registers_in_use(&table);
                    let r = table.insert_hardware(KINDS[kind as usize], u64::from(addr) * 8, u64::from(len));
                    match stored_len(KINDS[kind as usize], len) {
                        None => prop_assert_eq!(r, Err(Errno::INVAL)),
                        Some(len) => {
                            let key = (kind, u64::from(addr) * 8, len);
                            if hardware.contains_key(&key) || in_use < 4 {
                                prop_assert_eq!(r, Ok(()));
                                *hardware.entry(key).or_default() += 1;
                            } else {
                                prop_assert_eq!(r, Err(Errno::NOSPC));
                            }
                        }
                    }
                }
                Op::RemoveHardware { kind, addr, len } => {
                    let r = table.remove_hardware(KINDS[kind as usize], u64::from(addr) * 8, u64::from(len));
                    match stored_len(KINDS[kind as usize], len) {
                        None => prop_assert_eq!(r, Err(Errno::INVAL)),
                        Some(len) => match hardware.get_mut(&(kind, u64::from(addr) * 8, len)) {
                            Some(n) => {
                                prop_assert_eq!(r, Ok(()));
                                *n -= 1;
                                if *n == 0 { hardware.remove(&(kind, u64::from(addr) * 8, len)); }
                            }
                            None => prop_assert_eq!(r, Err(Errno::NOENT)),
                        },
                    }
                }
                Op::Map { gva } => mapped[gva as usize] = true,
                Op::GuestWrite { gpa, byte } => {
                    mem.write_byte(u64::from(gpa), byte).unwrap();
                    guest[gpa as usize] = byte;
                }
                Op::Rearm => { table.rearm(|gva, _| translate(gva), &mem); }
                Op::RemoveAll => {
                    table.remove_all(&mem);
                    refs.clear();
                    hardware.clear();
                }
                Op::Lift { gva } => {
                    if let Ok(gpa) = translate(u64::from(gva)) {
                        let patched = table.patch_at(gpa).is_some();
                        prop_assert_eq!(table.lift(gpa, &mem), Ok(patched));
                        if patched {
                            lifted.push(gpa);
                        }
                    }
                }
                Op::Land => {
                    if !lifted.is_empty() {
                        let gpa = lifted.remove(0);
                        prop_assert_eq!(table.land(gpa, &mem), Ok(()));
                    }
                }
            }
            // Every inserted gva is armed, and the debug registers in use
            // are exactly the hardware entries and the software breakpoints
            // kept in one.
            let mut in_registers = 0;
            for &gva in refs.keys() {
                let bp = table.software_at(u64::from(gva));
                prop_assert!(bp.is_some(), "gva {} lost", gva);
                match bp.map(|b| b.location) {
                    Some(Location::Patched(gpa)) => prop_assert!(table.patch_at(gpa).is_some()),
                    Some(Location::Register(_)) => in_registers += 1,
                    None => {}
                }
            }
            prop_assert_eq!(registers_in_use(&table), hardware.len() + in_registers);
            // Memory: the guest's own bytes while a patch is being stepped
            // over; an int3 where patched (unless the guest has written
            // there since); the guest's bytes everywhere else. A patch's
            // saved byte is never an int3 (the guest stores none).
            let actual = mem.borrow().clone();
            for gpa in 0..64u64 {
                let byte = actual[gpa as usize];
                match table.patch_at(gpa) {
                    _ if lifted.contains(&gpa) => prop_assert_eq!(byte, guest[gpa as usize], "lifted gpa {}", gpa),
                    Some(patch) => {
                        prop_assert!(byte == INT3 || byte == guest[gpa as usize]);
                        prop_assert_ne!(patch.original, INT3);
                    }
                    None => prop_assert_eq!(byte, guest[gpa as usize], "gpa {}", gpa),
                }
            }
        }
        // Every step over lands; removing everything gives the guest its
        // memory back exactly.
        for gpa in lifted {
            prop_assert_eq!(table.land(gpa, &mem), Ok(()));
        }
        table.remove_all(&mem);
        prop_assert_eq!(mem.borrow().clone(), guest);
        prop_assert!(table.is_empty());
    }
}
