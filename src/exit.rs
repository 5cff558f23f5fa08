//! VM exits, copied out of the shared `kvm_run` page into plain values.
//!
//! The run loop decodes an exit while it holds the vcpu, then releases it
//! before calling the VMM, so handlers may call back into the library. An
//! [`Exit`] is two words, small enough to stay in registers; the larger
//! parts of some exits go into the run loop's [`ExitData`].

use std::marker::PhantomData;
use std::ptr::NonNull;

use kvm_bindings::*;

/// The direction of a port I/O exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDirection {
    /// `in`/`ins`: the VMM supplies the data.
    In,
    /// `out`/`outs`: the guest supplies the data.
    Out,
}

/// The largest port I/O payload of one exit: the kernel's I/O page.
pub(crate) const IO_DATA_MAX: usize = 4096;

/// Where a port I/O exit's data lies in the vcpu mapping: checked once, by
/// [`decode`], to lie inside it (only `decode` makes one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoPayload {
    offset: u16,
    len: u16,
}

impl IoPayload {
    /// Offset of the data from the start of `kvm_run`.
    pub fn offset(&self) -> usize {
        self.offset as usize
    }

    /// Bytes of data: element size times count, at most [`IO_DATA_MAX`].
    pub fn bytes(&self) -> usize {
        self.len as usize
    }
}

/// A vcpu's mapping as the kernel left it at an exit: `kvm_run` at its
/// start and, further on, the data of port I/O.
#[derive(Clone, Copy)]
pub struct RunMapping<'a> {
    start: NonNull<u8>,
    len: usize,
    _mapping: PhantomData<&'a [u8]>,
}

impl<'a> RunMapping<'a> {
    /// # Safety
    /// `start` begins `len` readable bytes, at least a `kvm_run` and
    /// aligned for one, that nothing writes while the value lives.
    #[inline(always)]
    pub unsafe fn new(start: NonNull<u8>, len: usize) -> RunMapping<'a> {
        RunMapping { start, len, _mapping: PhantomData }
    }

    /// The `kvm_run` at the start.
    #[inline(always)]
    fn run(&self) -> &'a kvm_run {
        // SAFETY: `new`'s contract.
        unsafe { self.start.cast::<kvm_run>().as_ref() }
    }

    /// The four bytes at `offset`, when they lie inside the mapping.
    #[inline(always)]
    fn u32_at(&self, offset: u64) -> Option<u32> {
        // No overflow: the mapping holds a `kvm_run`, far more than 4 bytes.
        if offset > (self.len - 4) as u64 {
            return None;
        }
        // SAFETY: inside the mapping (checked above), per `new`'s contract.
        Some(unsafe { self.start.as_ptr().add(offset as usize).cast::<u32>().read_unaligned() })
    }

    /// The `len` bytes at `offset`, when they lie inside the mapping.
    #[inline(always)]
    pub fn bytes(&self, offset: u64, len: usize) -> Option<&'a [u8]> {
        let end = offset.checked_add(len as u64)?;
        if end > self.len as u64 {
            return None;
        }
        // SAFETY: inside the mapping (checked above), per `new`'s contract.
        Some(unsafe { std::slice::from_raw_parts(self.start.as_ptr().add(offset as usize), len) })
    }
}

/// The size of one port access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortWidth {
    /// One byte.
    Byte,
    /// Two bytes.
    Word,
    /// Four bytes.
    Long,
}

/// One VM exit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Exit {
    /// `out` of one element, without `rep`: nearly every port exit.
    PortOut {
        /// The port.
        port: u16,
        /// `outb`, `outw` or `outl`.
        width: PortWidth,
        /// The value written, in its low `width` bytes.
        value: u32,
    },
    /// Any other port I/O: `in`, and `outs` of `count` elements of `size`
    /// bytes (their data is copied out with the exit).
    Io {
        /// In or out.
        direction: IoDirection,
        /// The port.
        port: u16,
        /// Bytes per element: 1, 2 or 4.
        size: u8,
        /// Elements (more than one for `rep ins`/`rep outs`).
        count: u16,
        /// The data in the vcpu mapping.
        payload: IoPayload,
    },
    /// An access to unbacked guest-physical memory; a store's bytes are
    /// in [`ExitData::mmio`].
    Mmio {
        /// Guest-physical address.
        addr: u64,
        /// Bytes accessed, at most 8.
        len: u8,
        /// True for a store.
        is_write: bool,
    },
    /// Any other exit, described in [`ExitData::other`]: so that the
    /// common exits above move in registers.
    Other,
}

/// The exits other than port I/O and MMIO.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OtherExit {
    /// `hlt` with no in-kernel irqchip.
    Hlt,
    /// Triple fault or another shutdown.
    Shutdown,
    /// The interrupt window requested by `request_interrupt_window` is open.
    IrqWindowOpen,
    /// CR8 was written.
    SetTpr,
    /// A TPR access while reporting is on.
    TprAccess {
        /// Guest RIP of the access.
        rip: u64,
        /// True for a write.
        is_write: bool,
    },
    /// `KVM_EXIT_DEBUG`, described in [`ExitData::debug`].
    Debug,
    /// `KVM_EXIT_INTERNAL_ERROR` (on this project's host: an `int3`),
    /// described in [`ExitData::internal`].
    InternalError,
    /// `KVM_EXIT_INTR`: a signal arrived.
    Interrupted,
    /// `KVM_EXIT_FAIL_ENTRY` with the hardware reason.
    FailEntry(u64),
    /// Any other exit reason, and port I/O with a size or data the kernel
    /// would never report (`KVM_EXIT_IO`).
    Unknown(u32),
}

/// The parts of an exit that do not move with the [`Exit`]: filled by
/// [`decode`], read by the exit's handler. One per run loop.
pub struct ExitData {
    /// The data of port I/O other than one `out`, elements back to back:
    /// copied out for `outs`, filled by the VMM for `in`.
    pub io: [u8; IO_DATA_MAX],
    /// The bytes of an MMIO store, or of a load once the VMM answered.
    pub mmio: [u8; 8],
    /// Which exit `Exit::Other` is.
    pub other: OtherExit,
    /// The exit of `OtherExit::Debug`.
    pub debug: kvm_debug_exit_arch,
    /// The exit of `OtherExit::InternalError`.
    pub internal: InternalError,
}

impl Default for ExitData {
    fn default() -> ExitData {
        ExitData {
            io: [0; IO_DATA_MAX],
            mmio: [0; 8],
            other: OtherExit::Unknown(KVM_EXIT_UNKNOWN),
            debug: kvm_debug_exit_arch::default(),
            internal: InternalError { suberror: 0, ndata: 0, data: [0; INTERNAL_ERROR_DATA] },
        }
    }
}

/// The payload of `KVM_EXIT_INTERNAL_ERROR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InternalError {
    /// `KVM_INTERNAL_ERROR_*`.
    pub suberror: u32,
    /// Valid entries of the kernel's `data`.
    pub ndata: u32,
    /// The first entries of the kernel's `data`: for an emulation failure,
    /// flags then the instruction (its length, then up to 15 bytes). The
    /// rest is not kept, so that an exit stays small to move.
    pub data: [u64; INTERNAL_ERROR_DATA],
}

/// How many entries of `KVM_EXIT_INTERNAL_ERROR`'s data an [`InternalError`] keeps.
pub(crate) const INTERNAL_ERROR_DATA: usize = 3;

impl InternalError {
    /// The bytes of the instruction the emulator failed on, when the kernel
    /// reported them (`KVM_INTERNAL_ERROR_EMULATION` with the
    /// instruction-bytes flag).
    pub fn instruction_bytes(&self) -> Option<([u8; 15], usize)> {
        let has_bytes = self.suberror == KVM_INTERNAL_ERROR_EMULATION
            && self.ndata >= 2
            && self.data[0] & u64::from(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0;
        if !has_bytes {
            return None;
        }
        // Layout: flags, then { u8 insn_size; u8 insn_bytes[15]; } over data[1..3].
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.data[1].to_ne_bytes());
        raw[8..].copy_from_slice(&self.data[2].to_ne_bytes());
        let len = usize::from(raw[0]).min(15);
        let mut bytes = [0u8; 15];
        bytes.copy_from_slice(&raw[1..]);
        Some((bytes, len))
    }
}

/// Decodes the exit described by `mapping`, after a successful `KVM_RUN`.
/// Port I/O whose size or data the kernel would never report is
/// `OtherExit::Unknown(KVM_EXIT_IO)`. `on_other` runs first for every exit
/// but port I/O and MMIO. Inlined: it is on the path of every exit, where a
/// call would build the exit in memory and then copy it.
#[inline(always)]
pub fn decode(mapping: RunMapping<'_>, data: &mut ExitData, on_other: impl FnOnce()) -> Exit {
    let run = mapping.run();
    // SAFETY (both union reads): the kernel wrote `exit_reason`, which
    // names the union member it filled; all members are plain integers.
    match run.exit_reason {
        KVM_EXIT_IO => decode_port_io(mapping, unsafe { &run.__bindgen_anon_1.io }, data),
        KVM_EXIT_MMIO => {
            let mmio = unsafe { &run.__bindgen_anon_1.mmio };
            data.mmio = mmio.data;
            Exit::Mmio { addr: mmio.phys_addr, len: mmio.len.min(8) as u8, is_write: mmio.is_write != 0 }
        }
        _ => {
            on_other();
            data.other = decode_other(run, data);
            Exit::Other
        }
    }
}

/// An exit that is not port I/O the kernel would report.
#[inline(always)]
fn bad_port_io(data: &mut ExitData) -> Exit {
    data.other = OtherExit::Unknown(KVM_EXIT_IO);
    Exit::Other
}

/// [`decode`] for port I/O: one `out` carries its value; anything else
/// (`in`, `outs`) where its data lies, and the data of `outs` is copied.
#[inline(always)]
fn decode_port_io(mapping: RunMapping<'_>, io: &kvm_run__bindgen_ty_1__bindgen_ty_4, data: &mut ExitData) -> Exit {
    let out = u32::from(io.direction) == KVM_EXIT_IO_OUT;
    if out && io.count == 1 {
        let (width, mask) = match io.size {
            1 => (PortWidth::Byte, 0xff),
            2 => (PortWidth::Word, 0xffff),
            4 => (PortWidth::Long, u32::MAX),
            _ => return bad_port_io(data),
        };
        // Four bytes whatever the size: one load, no length switch.
        return match mapping.u32_at(io.data_offset) {
            Some(raw) => Exit::PortOut { port: io.port, width, value: raw & mask },
            None => bad_port_io(data),
        };
    }
    decode_other_port_io(mapping, io, data)
}

/// [`decode_port_io`] for `in` and `outs`.
#[inline(always)]
fn decode_other_port_io(
    mapping: RunMapping<'_>,
    io: &kvm_run__bindgen_ty_1__bindgen_ty_4,
    data: &mut ExitData,
) -> Exit {
    let Some(payload) = io_payload(io.size, io.count, io.data_offset, mapping.len) else {
        return bad_port_io(data);
    };
    let out = u32::from(io.direction) == KVM_EXIT_IO_OUT;
    if out {
        copy_out_data(mapping, payload, &mut data.io);
    }
    let direction = if out { IoDirection::Out } else { IoDirection::In };
    // `count` fits: the data is at most a page.
    Exit::Io { direction, port: io.port, size: io.size, count: io.count as u16, payload }
}

/// [`decode`] for every exit but port I/O and MMIO: out of line, so that
/// the common exits are told apart by two comparisons.
#[inline(never)]
fn decode_other(run: &kvm_run, data: &mut ExitData) -> OtherExit {
    // SAFETY (every union read below): as in `decode`.
    match run.exit_reason {
        KVM_EXIT_HLT => OtherExit::Hlt,
        KVM_EXIT_SHUTDOWN => OtherExit::Shutdown,
        KVM_EXIT_IRQ_WINDOW_OPEN => OtherExit::IrqWindowOpen,
        KVM_EXIT_SET_TPR => OtherExit::SetTpr,
        KVM_EXIT_TPR_ACCESS => {
            let tpr = unsafe { &run.__bindgen_anon_1.tpr_access };
            OtherExit::TprAccess { rip: tpr.rip, is_write: tpr.is_write != 0 }
        }
        KVM_EXIT_DEBUG => {
            data.debug = unsafe { run.__bindgen_anon_1.debug.arch };
            OtherExit::Debug
        }
        KVM_EXIT_INTERNAL_ERROR => {
            let internal = unsafe { &run.__bindgen_anon_1.internal };
            let mut words = [0; INTERNAL_ERROR_DATA];
            words.copy_from_slice(&internal.data[..INTERNAL_ERROR_DATA]);
            data.internal = InternalError { suberror: internal.suberror, ndata: internal.ndata, data: words };
            OtherExit::InternalError
        }
        KVM_EXIT_INTR => OtherExit::Interrupted,
        KVM_EXIT_FAIL_ENTRY => {
            OtherExit::FailEntry(unsafe { run.__bindgen_anon_1.fail_entry.hardware_entry_failure_reason })
        }
        other => OtherExit::Unknown(other),
    }
}

/// Copies the data of `outs` out of the mapping (where `io_payload` found it).
#[inline(never)]
fn copy_out_data(mapping: RunMapping<'_>, payload: IoPayload, io: &mut [u8; IO_DATA_MAX]) {
    if let Some(bytes) = mapping.bytes(payload.offset() as u64, payload.bytes()) {
        io[..bytes.len()].copy_from_slice(bytes);
    }
}

fn io_payload(size: u8, count: u32, data_offset: u64, mapping_len: usize) -> Option<IoPayload> {
    // Neither product nor sum can overflow: a u8 times a u32, and two
    // values below 2^32.
    let len = u64::from(size) * u64::from(count);
    let fits = matches!(size, 1 | 2 | 4)
        && len <= IO_DATA_MAX as u64
        && data_offset <= u64::from(u16::MAX)
        && data_offset + len <= mapping_len as u64;
    fits.then_some(IoPayload { offset: data_offset as u16, len: len as u16 })
}

/// A human-readable name of a `KVM_EXIT_*` reason, for diagnostics.
pub fn reason_name(reason: u32) -> &'static str {
    match reason {
        KVM_EXIT_UNKNOWN => "KVM_EXIT_UNKNOWN",
        KVM_EXIT_IO => "KVM_EXIT_IO with a size or data the kernel never reports",
        KVM_EXIT_EXCEPTION => "KVM_EXIT_EXCEPTION",
        KVM_EXIT_HYPERCALL => "KVM_EXIT_HYPERCALL",
        KVM_EXIT_FAIL_ENTRY => "KVM_EXIT_FAIL_ENTRY",
        KVM_EXIT_NMI => "KVM_EXIT_NMI",
        KVM_EXIT_INTERNAL_ERROR => "KVM_EXIT_INTERNAL_ERROR",
        KVM_EXIT_SYSTEM_EVENT => "KVM_EXIT_SYSTEM_EVENT",
        KVM_EXIT_IOAPIC_EOI => "KVM_EXIT_IOAPIC_EOI",
        KVM_EXIT_X86_RDMSR => "KVM_EXIT_X86_RDMSR",
        KVM_EXIT_X86_WRMSR => "KVM_EXIT_X86_WRMSR",
        KVM_EXIT_MEMORY_FAULT => "KVM_EXIT_MEMORY_FAULT",
        _ => "unknown exit reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vcpu mapping of two pages in memory, `kvm_run` at its start.
    #[repr(C, align(4096))]
    struct Mapping([u8; 8192]);

    impl Mapping {
        fn new(run: kvm_run) -> Box<Mapping> {
            let mut mapping = Box::new(Mapping([0; 8192]));
            // SAFETY: the buffer is page-aligned and larger than a kvm_run.
            unsafe { mapping.0.as_mut_ptr().cast::<kvm_run>().write(run) };
            mapping
        }

        fn decode(&self) -> Exit {
            self.decode_with(&mut ExitData::default())
        }

        fn decode_with(&self, data: &mut ExitData) -> Exit {
            // SAFETY: the buffer is 8192 bytes, aligned, and not written meanwhile.
            decode(unsafe { RunMapping::new(NonNull::from(&self.0).cast(), self.0.len()) }, data, || {})
        }
    }

    fn run_with(reason: u32) -> kvm_run {
        kvm_run { exit_reason: reason, ..Default::default() }
    }

    fn io_exit(direction: u8, size: u8, count: u32, data_offset: u64) -> kvm_run {
        let mut run = run_with(KVM_EXIT_IO);
        run.__bindgen_anon_1.io =
            kvm_run__bindgen_ty_1__bindgen_ty_4 { direction, size, port: 0x3f8, count, data_offset };
        run
    }

    #[test]
    fn string_io_keeps_size_count_and_offset() {
        let payload = IoPayload { offset: 4096, len: 5 };
        assert_eq!(
            Mapping::new(io_exit(0, 1, 5, 4096)).decode(),
            Exit::Io { direction: IoDirection::In, port: 0x3f8, size: 1, count: 5, payload }
        );
    }

    #[test]
    fn one_out_carries_its_value() {
        let widths = [(1, PortWidth::Byte, 0x44), (2, PortWidth::Word, 0x4344), (4, PortWidth::Long, 0x4142_4344)];
        for (size, width, value) in widths {
            let mut mapping = Mapping::new(io_exit(1, size, 1, 4096));
            mapping.0[4096..4100].copy_from_slice(&0x4142_4344u32.to_ne_bytes());
            assert_eq!(mapping.decode(), Exit::PortOut { port: 0x3f8, width, value });
        }
    }

    #[test]
    fn outs_copies_its_data() {
        let mut mapping = Mapping::new(io_exit(1, 2, 3, 4096));
        mapping.0[4096..4102].copy_from_slice(b"abcdef");
        let mut data = ExitData::default();
        let payload = IoPayload { offset: 4096, len: 6 };
        let exit = mapping.decode_with(&mut data);
        assert_eq!(exit, Exit::Io { direction: IoDirection::Out, port: 0x3f8, size: 2, count: 3, payload });
        assert_eq!(&data.io[..6], b"abcdef");
    }

    #[test]
    fn io_with_a_bad_size_or_data_outside_the_mapping_is_not_port_io() {
        let io = |direction, size, count, data_offset| {
            let mut data = ExitData::default();
            let exit = Mapping::new(io_exit(direction, size, count, data_offset)).decode_with(&mut data);
            (exit, data.other)
        };
        let not_port_io = (Exit::Other, OtherExit::Unknown(KVM_EXIT_IO));
        for direction in [0, 1] {
            assert!(matches!(io(direction, 4, 1024, 4096).0, Exit::Io { .. }));
            assert_eq!(io(direction, 3, 1, 4096), not_port_io);
            assert_eq!(io(direction, 3, 2, 4096), not_port_io);
            assert_eq!(io(direction, 4, 1025, 4096), not_port_io, "more than the I/O page");
            assert_eq!(io(direction, 1, 2, 8191), not_port_io, "past the end of the mapping");
            assert_eq!(io(direction, 4, 1, 8190), not_port_io, "past the end of the mapping");
            assert_eq!(io(direction, 1, 1, u64::MAX), not_port_io);
        }
    }

    #[test]
    fn mmio_store_keeps_its_bytes_and_clamps_the_length() {
        let mut run = run_with(KVM_EXIT_MMIO);
        run.__bindgen_anon_1.mmio = kvm_run__bindgen_ty_1__bindgen_ty_6 {
            phys_addr: 0xd000_0000,
            data: [1, 2, 3, 4, 0, 0, 0, 0],
            len: 99,
            is_write: 1,
        };
        let mut data = ExitData::default();
        let Exit::Mmio { addr, len, is_write } = Mapping::new(run).decode_with(&mut data) else { panic!("not mmio") };
        assert_eq!((addr, len, is_write, data.mmio[..4].to_vec()), (0xd000_0000, 8, true, vec![1, 2, 3, 4]));
    }

    #[test]
    fn emulation_failure_exposes_the_instruction_bytes() {
        let mut run = run_with(KVM_EXIT_INTERNAL_ERROR);
        let mut data = [0u64; 16];
        data[0] = 1; // instruction bytes present
        data[1] = u64::from_ne_bytes([1, 0xcc, 0x90, 0, 0, 0, 0, 0]);
        run.__bindgen_anon_1.internal = kvm_run__bindgen_ty_1__bindgen_ty_13 { suberror: 1, ndata: 4, data };
        let mut exit_data = ExitData::default();
        assert_eq!(Mapping::new(run).decode_with(&mut exit_data), Exit::Other);
        assert_eq!(exit_data.other, OtherExit::InternalError);
        let (bytes, len) = exit_data.internal.instruction_bytes().unwrap();
        assert_eq!((len, bytes[0], bytes[1]), (1, 0xcc, 0x90));
    }

    #[test]
    fn other_internal_errors_have_no_instruction() {
        let e = InternalError { suberror: 3, ndata: 4, data: [1; INTERNAL_ERROR_DATA] };
        assert!(e.instruction_bytes().is_none());
        let e = InternalError { suberror: 1, ndata: 4, data: [0; INTERNAL_ERROR_DATA] };
        assert!(e.instruction_bytes().is_none(), "flag clear: bytes not valid");
    }
}
