//! VM-wide state: interrupt lines, irqchip, PIT, MMU pages, MSR list.

use kvm_bindings::{kvm_irqchip, kvm_pit_state, KVM_CAP_MMU_SHADOW_CACHE_CONTROL};
use kvm_ioctls::VmFd;

use super::Context;
use crate::error::{Errno, Result};
use crate::sys;

impl Context {
    /// `kvm_set_irq_level`: drives input `irq` of the in-kernel irqchip.
    /// False when there is none (the VMM's own PIC has the line).
    pub fn set_irq_level(&self, irq: u32, level: bool) -> Result<bool> {
        if !self.irqchip_in_kernel() {
            return Ok(false);
        }
        self.vm()?.set_irq_line(irq, level).map_err(Errno::from)?;
        Ok(true)
    }

    /// `kvm_get_irqchip`: `chip.chip_id` selects the PIC or IOAPIC.
    pub fn get_irqchip(&self, chip: &mut kvm_irqchip) -> Result<()> {
        self.vm()?.get_irqchip(chip).map_err(Errno::from)
    }

    /// `kvm_set_irqchip`.
    pub fn set_irqchip(&self, chip: &kvm_irqchip) -> Result<()> {
        self.vm()?.set_irqchip(chip).map_err(Errno::from)
    }

    /// `kvm_get_pit`.
    pub fn get_pit(&self) -> Result<kvm_pit_state> {
        sys::get_pit(self.vm()?)
    }

    /// `kvm_set_pit`.
    pub fn set_pit(&self, state: &kvm_pit_state) -> Result<()> {
        sys::set_pit(self.vm()?, state)
    }

    /// `kvm_set_shadow_pages`; `ENOTSUP` where the host cannot.
    pub fn set_shadow_pages(&self, pages: u32) -> Result<()> {
        sys::set_nr_mmu_pages(self.vm_with_shadow_cache_control()?, pages)
    }

    /// `kvm_get_shadow_pages`; `ENOTSUP` where the host cannot (kernels
    /// since 5.x dropped `KVM_GET_NR_MMU_PAGES`).
    pub fn get_shadow_pages(&self) -> Result<u32> {
        sys::get_nr_mmu_pages(self.vm_with_shadow_cache_control()?).map_err(|e| match e.0 {
            libc::EINVAL | libc::ENOTTY => Errno::NOTSUP,
            _ => e,
        })
    }

    /// The VM, where the host lets userspace size the MMU page cache.
    fn vm_with_shadow_cache_control(&self) -> Result<&VmFd> {
        if self.check_extension(KVM_CAP_MMU_SHADOW_CACHE_CONTROL) <= 0 {
            return Err(Errno::NOTSUP);
        }
        self.vm()
    }

    /// The MSR indices the host supports (`KVM_GET_MSR_INDEX_LIST`).
    pub fn msr_indices(&self) -> Result<Vec<u32>> {
        Ok(self.kvm.get_msr_index_list().map_err(Errno::from)?.as_slice().to_vec())
    }
}
