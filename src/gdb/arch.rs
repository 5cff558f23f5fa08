//! The register set the stub shows gdb: `gdbstub_arch`'s x86-64 core and
//! SSE registers, then FS/GS base and the system registers that other stubs
//! leave out (CR0, CR2, CR3, CR4, CR8, EFER, CS/SS/DS/ES base), described by
//! a target description of our own. The layout is the same in every CPU
//! mode, so the `g` reply never changes size. The OS ABI is GNU/Linux: gdb
//! then writes `gcore` files the way it does for a Linux target (threads as
//! LWPs, memory from `/proc/<pid>/maps`, see [`super::host_files`]).

use std::num::NonZeroUsize;

use gdbstub::arch::{Arch, RegId, Registers};
use gdbstub_arch::x86::reg::X86_64CoreRegs;

/// The x86-64 architecture as the libkvm stub describes it.
pub enum LibkvmX86_64 {}

impl Arch for LibkvmX86_64 {
    type Usize = u64;
    type Registers = VcpuRegisters;
    type RegId = ExpeditedRegister;
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
    }
}

/// The registers a stop reply carries, so that gdb need not ask for them
/// (`g`) to place the stop: the frame pointer, the stack pointer and the
/// instruction pointer, with their numbers in the target description. Single
/// registers are not read or written one by one (`p`/`P`): gdb uses `g`/`G`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpeditedRegister {
    /// RBP, register 6.
    Rbp,
    /// RSP, register 7.
    Rsp,
    /// RIP, register 16.
    Rip,
}

impl RegId for ExpeditedRegister {
    fn from_raw_id(_id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        None
    }

    fn to_raw_id(&self) -> Option<usize> {
        Some(match self {
            ExpeditedRegister::Rbp => 6,
            ExpeditedRegister::Rsp => 7,
            ExpeditedRegister::Rip => 16,
        })
    }
}

/// Bytes of the core and SSE registers as `gdbstub_arch` serialises them.
const CORE_BYTES: usize = 0x218;

/// The registers after the core and SSE ones, in target-description order.
pub const EXTRA_REGISTERS: [&str; 12] =
    ["fs_base", "gs_base", "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "cs_base", "ss_base", "ds_base", "es_base"];

/// Bytes of the whole `g` block: core and SSE, ours, then `orig_rax`.
const BLOCK_BYTES: usize = CORE_BYTES + 8 * EXTRA_REGISTERS.len() + 8;

/// `orig_rax` as gdb's Linux OS ABI wants it (the feature is what makes gdb
/// use that ABI, and with it `gcore`): always -1, "not in a system call";
/// what gdb writes there is ignored.
const ORIG_RAX: i64 = -1;

/// Every register gdb sees for one vcpu.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VcpuRegisters {
    /// General, RIP, RFLAGS, selectors, x87 and SSE.
    pub core: X86_64CoreRegs,
    /// The registers named in [`EXTRA_REGISTERS`], in that order.
    pub extra: [u64; EXTRA_REGISTERS.len()],
}

impl Registers for VcpuRegisters {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.core.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        self.core.gdb_serialize(&mut write_byte);
        for value in self.extra {
            value.to_le_bytes().into_iter().for_each(|b| write_byte(Some(b)));
        }
        ORIG_RAX.to_le_bytes().into_iter().for_each(|b| write_byte(Some(b)));
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if bytes.len() != BLOCK_BYTES {
            return Err(());
        }
        self.core.gdb_deserialize(&bytes[..CORE_BYTES])?;
        let extra = &bytes[CORE_BYTES..BLOCK_BYTES - 8];
        for (value, chunk) in self.extra.iter_mut().zip(extra.chunks_exact(8)) {
            *value = u64::from_le_bytes(chunk.try_into().map_err(|_| ())?);
        }
        Ok(())
    }
}

/// The target description: GDB's own i386 core, SSE and segments features
/// (register names and types as GDB expects them), and ours.
pub const TARGET_XML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target version="1.0">
  <architecture>i386:x86-64</architecture>
  <osabi>GNU/Linux</osabi>
  <feature name="org.gnu.gdb.i386.core">
    <flags id="i386_eflags" size="4">
      <field name="CF" start="0" end="0"/>
      <field name="" start="1" end="1"/>
      <field name="PF" start="2" end="2"/>
      <field name="AF" start="4" end="4"/>
      <field name="ZF" start="6" end="6"/>
      <field name="SF" start="7" end="7"/>
      <field name="TF" start="8" end="8"/>
      <field name="IF" start="9" end="9"/>
      <field name="DF" start="10" end="10"/>
      <field name="OF" start="11" end="11"/>
      <field name="NT" start="14" end="14"/>
      <field name="RF" start="16" end="16"/>
      <field name="VM" start="17" end="17"/>
      <field name="AC" start="18" end="18"/>
      <field name="VIF" start="19" end="19"/>
      <field name="VIP" start="20" end="20"/>
      <field name="ID" start="21" end="21"/>
    </flags>
    <reg name="rax" bitsize="64" type="int64" regnum="0"/>
    <reg name="rbx" bitsize="64" type="int64"/>
    <reg name="rcx" bitsize="64" type="int64"/>
    <reg name="rdx" bitsize="64" type="int64"/>
    <reg name="rsi" bitsize="64" type="int64"/>
    <reg name="rdi" bitsize="64" type="int64"/>
    <reg name="rbp" bitsize="64" type="data_ptr"/>
    <reg name="rsp" bitsize="64" type="data_ptr"/>
    <reg name="r8" bitsize="64" type="int64"/>
    <reg name="r9" bitsize="64" type="int64"/>
    <reg name="r10" bitsize="64" type="int64"/>
    <reg name="r11" bitsize="64" type="int64"/>
    <reg name="r12" bitsize="64" type="int64"/>
    <reg name="r13" bitsize="64" type="int64"/>
    <reg name="r14" bitsize="64" type="int64"/>
    <reg name="r15" bitsize="64" type="int64"/>
    <reg name="rip" bitsize="64" type="code_ptr"/>
    <reg name="eflags" bitsize="32" type="i386_eflags"/>
    <reg name="cs" bitsize="32" type="int32"/>
    <reg name="ss" bitsize="32" type="int32"/>
    <reg name="ds" bitsize="32" type="int32"/>
    <reg name="es" bitsize="32" type="int32"/>
    <reg name="fs" bitsize="32" type="int32"/>
    <reg name="gs" bitsize="32" type="int32"/>
    <reg name="st0" bitsize="80" type="i387_ext"/>
    <reg name="st1" bitsize="80" type="i387_ext"/>
    <reg name="st2" bitsize="80" type="i387_ext"/>
    <reg name="st3" bitsize="80" type="i387_ext"/>
    <reg name="st4" bitsize="80" type="i387_ext"/>
    <reg name="st5" bitsize="80" type="i387_ext"/>
    <reg name="st6" bitsize="80" type="i387_ext"/>
    <reg name="st7" bitsize="80" type="i387_ext"/>
    <reg name="fctrl" bitsize="32" type="int" group="float"/>
    <reg name="fstat" bitsize="32" type="int" group="float"/>
    <reg name="ftag" bitsize="32" type="int" group="float"/>
    <reg name="fiseg" bitsize="32" type="int" group="float"/>
    <reg name="fioff" bitsize="32" type="int" group="float"/>
    <reg name="foseg" bitsize="32" type="int" group="float"/>
    <reg name="fooff" bitsize="32" type="int" group="float"/>
    <reg name="fop" bitsize="32" type="int" group="float"/>
  </feature>
  <feature name="org.gnu.gdb.i386.sse">
    <vector id="v4f" type="ieee_single" count="4"/>
    <vector id="v2d" type="ieee_double" count="2"/>
    <vector id="v16i8" type="int8" count="16"/>
    <vector id="v8i16" type="int16" count="8"/>
    <vector id="v4i32" type="int32" count="4"/>
    <vector id="v2i64" type="int64" count="2"/>
    <union id="vec128">
      <field name="v4_float" type="v4f"/>
      <field name="v2_double" type="v2d"/>
      <field name="v16_int8" type="v16i8"/>
      <field name="v8_int16" type="v8i16"/>
      <field name="v4_int32" type="v4i32"/>
      <field name="v2_int64" type="v2i64"/>
      <field name="uint128" type="uint128"/>
    </union>
    <flags id="i386_mxcsr" size="4">
      <field name="IE" start="0" end="0"/>
      <field name="DE" start="1" end="1"/>
      <field name="ZE" start="2" end="2"/>
      <field name="OE" start="3" end="3"/>
      <field name="UE" start="4" end="4"/>
      <field name="PE" start="5" end="5"/>
      <field name="DAZ" start="6" end="6"/>
      <field name="IM" start="7" end="7"/>
      <field name="DM" start="8" end="8"/>
      <field name="ZM" start="9" end="9"/>
      <field name="OM" start="10" end="10"/>
      <field name="UM" start="11" end="11"/>
      <field name="PM" start="12" end="12"/>
      <field name="FZ" start="15" end="15"/>
    </flags>
    <reg name="xmm0" bitsize="128" type="vec128" regnum="40"/>
    <reg name="xmm1" bitsize="128" type="vec128"/>
    <reg name="xmm2" bitsize="128" type="vec128"/>
    <reg name="xmm3" bitsize="128" type="vec128"/>
    <reg name="xmm4" bitsize="128" type="vec128"/>
    <reg name="xmm5" bitsize="128" type="vec128"/>
    <reg name="xmm6" bitsize="128" type="vec128"/>
    <reg name="xmm7" bitsize="128" type="vec128"/>
    <reg name="xmm8" bitsize="128" type="vec128"/>
    <reg name="xmm9" bitsize="128" type="vec128"/>
    <reg name="xmm10" bitsize="128" type="vec128"/>
    <reg name="xmm11" bitsize="128" type="vec128"/>
    <reg name="xmm12" bitsize="128" type="vec128"/>
    <reg name="xmm13" bitsize="128" type="vec128"/>
    <reg name="xmm14" bitsize="128" type="vec128"/>
    <reg name="xmm15" bitsize="128" type="vec128"/>
    <reg name="mxcsr" bitsize="32" type="i386_mxcsr" group="vector"/>
  </feature>
  <feature name="org.gnu.gdb.i386.segments">
    <reg name="fs_base" bitsize="64" type="int" regnum="57"/>
    <reg name="gs_base" bitsize="64" type="int"/>
  </feature>
  <feature name="org.libkvm.x86.system">
    <reg name="cr0" bitsize="64" type="uint64" group="system" regnum="59"/>
    <reg name="cr2" bitsize="64" type="uint64" group="system"/>
    <reg name="cr3" bitsize="64" type="uint64" group="system"/>
    <reg name="cr4" bitsize="64" type="uint64" group="system"/>
    <reg name="cr8" bitsize="64" type="uint64" group="system"/>
    <reg name="efer" bitsize="64" type="uint64" group="system"/>
    <reg name="cs_base" bitsize="64" type="uint64" group="system"/>
    <reg name="ss_base" bitsize="64" type="uint64" group="system"/>
    <reg name="ds_base" bitsize="64" type="uint64" group="system"/>
    <reg name="es_base" bitsize="64" type="uint64" group="system"/>
  </feature>
  <feature name="org.gnu.gdb.i386.linux">
    <reg name="orig_rax" bitsize="64" type="int" regnum="71"/>
  </feature>
</target>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_block_round_trips_and_has_a_fixed_size() {
        let mut regs = VcpuRegisters::default();
        regs.core.regs[0] = 0x1122_3344_5566_7788;
        regs.core.rip = 0x10_0000;
        regs.extra = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let mut bytes = Vec::new();
        regs.gdb_serialize(|b| bytes.push(b.unwrap_or(0)));
        assert_eq!(bytes.len(), CORE_BYTES + 96 + 8);
        assert_eq!(bytes[CORE_BYTES + 96..], [0xff; 8], "orig_rax is -1");
        let mut back = VcpuRegisters::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, regs);
        assert!(back.gdb_deserialize(&bytes[..CORE_BYTES]).is_err(), "a short G packet is refused");
    }

    #[test]
    fn target_description_numbers_our_registers_after_the_core_ones() {
        // 0-39 core, 40-55 xmm, 56 mxcsr, 57-58 fs/gs base, 59.. ours.
        assert!(TARGET_XML.contains(r#"<reg name="fs_base" bitsize="64" type="int" regnum="57"/>"#));
        assert!(TARGET_XML.contains(r#"<reg name="cr0" bitsize="64" type="uint64" group="system" regnum="59"/>"#));
        for name in EXTRA_REGISTERS {
            assert!(TARGET_XML.contains(&format!(r#"<reg name="{name}""#)), "{name} described");
        }
        let registers = TARGET_XML.matches("<reg ").count();
        assert_eq!(registers, 57 + EXTRA_REGISTERS.len() + 1);
        assert!(TARGET_XML.contains(r#"<reg name="orig_rax" bitsize="64" type="int" regnum="71"/>"#));
    }
}
