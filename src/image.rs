//! Images kctl makes itself, so that a cluster needs no registry.
//!
//! The pause image holds each pod's network namespace. Its only file is a
//! 129-byte static x86-64 ELF whose code is `loop { pause() }`: it sleeps
//! until killed and needs nothing from the host.

/// The pause program: ELF header, one PT_LOAD segment, then
/// `mov eax, 34 (SYS_pause); syscall; jmp back`.
pub fn pause_elf_x86_64() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let code: [u8; 9] = [0xb8, 0x22, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7];
    let size = HEADERS + code.len() as u64;
    let mut elf = Vec::with_capacity(size as usize);
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 1, 0, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for word in [0, BASE, BASE, size, size, 0x1000u64] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(&code);
    elf
}

/// A root filesystem holding only `/pause`, for `docker import -`.
pub fn pause_rootfs_tar() -> Vec<u8> {
    let mut tar = TarWriter::default();
    tar.file("pause", 0o755, &pause_elf_x86_64());
    tar.finish()
}

/// A minimal ustar writer: regular files only, which is all kctl needs.
#[derive(Default)]
pub struct TarWriter {
    bytes: Vec<u8>,
}

impl TarWriter {
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        let mut header = [0u8; 512];
        header[..path.len().min(100)].copy_from_slice(&path.as_bytes()[..path.len().min(100)]);
        octal(&mut header[100..108], u64::from(mode));
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], data.len() as u64);
        octal(&mut header[136..148], 0);
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        octal(&mut header[148..155], u64::from(sum));
        self.bytes.extend_from_slice(&header);
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0u8, 1024));
        self.bytes
    }
}

/// Writes `value` as zero-padded octal filling all but the last byte of
/// `field`, which stays NUL.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(&text.as_bytes()[text.len() - width..]);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_elf_is_well_formed() {
        let elf = pause_elf_x86_64();
        assert_eq!(elf.len(), 129);
        assert_eq!(&elf[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, 0x40_0078);
        let filesz = u64::from_le_bytes(elf[64 + 32..64 + 40].try_into().unwrap());
        assert_eq!(filesz, 129);
    }

    #[test]
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn pause_elf_runs_until_killed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("kctl-pause-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pause");
        std::fs::write(&path, pause_elf_x86_64()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&path).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "pause exited early");
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tar_is_readable_by_tar() {
        let bytes = pause_rootfs_tar();
        assert_eq!(bytes.len() % 512, 0);
        let out = std::process::Command::new("tar")
            .args(["-tvf", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(&bytes)?;
                child.wait_with_output()
            })
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(
            listing.contains("-rwxr-xr-x")
                && listing.contains(" 129 ")
                && listing.contains("pause"),
            "{listing}"
        );
    }
}
