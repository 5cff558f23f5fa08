//! The few ELF64 structures a core file needs, serialised little-endian.

/// `ET_CORE`.
const ET_CORE: u16 = 4;
/// `EM_X86_64`.
const EM_X86_64: u16 = 62;
/// `PT_LOAD`.
pub(crate) const PT_LOAD: u32 = 1;
/// `PT_NOTE`.
pub(crate) const PT_NOTE: u32 = 4;
/// Segment flags: readable, writable, executable.
pub(crate) const PF_RWX: u32 = 7;
/// Segment flags: readable.
pub(crate) const PF_R: u32 = 4;

/// Bytes of the ELF header.
pub(crate) const EHDR_SIZE: usize = 64;
/// Bytes of one program header.
pub(crate) const PHDR_SIZE: usize = 56;
/// The largest program header count `e_phnum` holds.
pub(crate) const MAX_PHNUM: usize = 0xfffe;

/// The ELF header of an x86-64 core file with `phnum` program headers
/// right after it.
pub fn core_header(phnum: u16) -> [u8; EHDR_SIZE] {
    let mut h = [0u8; EHDR_SIZE];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // ELFDATA2LSB
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&ET_CORE.to_le_bytes());
    h[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes()); // e_version
    h[32..40].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes()); // e_phoff
    h[52..54].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes()); // e_ehsize
    h[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes()); // e_phentsize
    h[56..58].copy_from_slice(&phnum.to_le_bytes());
    h
}

/// One program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramHeader {
    /// `PT_LOAD` or `PT_NOTE`.
    pub kind: u32,
    /// `PF_*`.
    pub flags: u32,
    /// Where the bytes are in the file.
    pub offset: u64,
    /// The address the guest's symbols use.
    pub vaddr: u64,
    /// The guest-physical address.
    pub paddr: u64,
    /// Bytes in the file (and in memory).
    pub size: u64,
    /// Alignment.
    pub align: u64,
}

impl ProgramHeader {
    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; PHDR_SIZE] {
        let mut p = [0u8; PHDR_SIZE];
        p[0..4].copy_from_slice(&self.kind.to_le_bytes());
        p[4..8].copy_from_slice(&self.flags.to_le_bytes());
        p[8..16].copy_from_slice(&self.offset.to_le_bytes());
        p[16..24].copy_from_slice(&self.vaddr.to_le_bytes());
        p[24..32].copy_from_slice(&self.paddr.to_le_bytes());
        p[32..40].copy_from_slice(&self.size.to_le_bytes()); // p_filesz
        p[40..48].copy_from_slice(&self.size.to_le_bytes()); // p_memsz
        p[48..56].copy_from_slice(&self.align.to_le_bytes());
        p
    }
}

/// Appends one note (`name` and `desc` each padded to 4 bytes) to `out`.
pub fn push_note(out: &mut Vec<u8>, name: &[u8], kind: u32, desc: &[u8]) {
    let name_len = name.len() + 1; // with its NUL
    out.extend_from_slice(&(name_len as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(name);
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_pads_its_name_and_description_to_four_bytes() {
        let mut out = Vec::new();
        push_note(&mut out, b"CORE", 1, &[1, 2, 3, 4, 5]);
        assert_eq!(&out[..12], &[5, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&out[12..20], b"CORE\0\0\0\0");
        assert_eq!(&out[20..28], &[1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(out.len(), 28);
    }

    #[test]
    fn the_header_says_x86_64_core_with_its_program_headers_after_it() {
        let h = core_header(3);
        assert_eq!(&h[..7], b"\x7fELF\x02\x01\x01");
        assert_eq!(u16::from_le_bytes([h[16], h[17]]), ET_CORE);
        assert_eq!(u16::from_le_bytes([h[18], h[19]]), EM_X86_64);
        assert_eq!(u64::from_le_bytes(h[32..40].try_into().unwrap()), 64);
        assert_eq!(u16::from_le_bytes([h[56], h[57]]), 3);
    }
}
