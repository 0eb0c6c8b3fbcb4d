//! Images without a registry: tar archives written here (ustar), Docker
//! archives of one or more layers (what `docker save` writes and
//! containerd imports), tug's own pause image, and the import of archives
//! into the agent's containerd (namespace `k8s.io`, where CRI looks).

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::json;

/// The pause image every pod sandbox runs: built and imported by the agent
/// at start, so no registry is needed to start a pod.
pub const PAUSE_IMAGE: &str = "tug.local/pause:1";

/// One entry of a tar archive.
pub enum Entry<'a> {
    File {
        path: &'a str,
        mode: u32,
        data: &'a [u8],
    },
    Dir {
        path: &'a str,
    },
    Symlink {
        path: &'a str,
        target: &'a str,
    },
}

/// A ustar archive of `entries`, owned by root, dated at the epoch (so the
/// same entries always give the same bytes, hence the same digest).
pub fn tar(entries: &[Entry<'_>]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for entry in entries {
        let (path, mode, kind, size, link) = match entry {
            Entry::File { path, mode, data } => (*path, *mode, b'0', data.len(), ""),
            Entry::Dir { path } => (*path, 0o755, b'5', 0, ""),
            Entry::Symlink { path, target } => (*path, 0o777, b'2', 0, *target),
        };
        let mut header = [0u8; 512];
        let (prefix, name) = split_path(path)?;
        if link.len() > 100 {
            bail!("link target too long for a tar header: {link}");
        }
        header[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut header[100..108], u64::from(mode));
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], size as u64);
        octal(&mut header[136..148], 0);
        header[156] = kind;
        header[157..157 + link.len()].copy_from_slice(link.as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[265..269].copy_from_slice(b"root");
        header[297..301].copy_from_slice(b"root");
        header[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        // The checksum is taken with its own field as spaces.
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        let digits = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(digits.as_bytes());
        out.extend_from_slice(&header);
        if let Entry::File { data, .. } = entry {
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// A path as ustar's prefix (155 bytes) and name (100 bytes).
fn split_path(path: &str) -> anyhow::Result<(&str, &str)> {
    if path.len() <= 100 {
        return Ok(("", path));
    }
    for (i, c) in path.char_indices() {
        if c == '/' && i <= 155 && path.len() - i - 1 <= 100 {
            return Ok((&path[..i], &path[i + 1..]));
        }
    }
    bail!("path too long for a tar header: {path}")
}

/// `value` in octal, zero-padded, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    field[..width].copy_from_slice(&digits.as_bytes()[digits.len() - width..]);
    field[width] = 0;
}

pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What an image runs, as its config says.
#[derive(Default)]
pub struct ImageConfig<'a> {
    pub entrypoint: &'a [&'a str],
    pub cmd: &'a [&'a str],
    pub env: &'a [&'a str],
    pub user: &'a str,
}

/// A Docker archive (`docker save`'s format) of one image `name` with the
/// given uncompressed layer tars, for the machine's architecture.
pub fn docker_archive(
    name: &str,
    layers: &[Vec<u8>],
    config: &ImageConfig<'_>,
) -> anyhow::Result<Vec<u8>> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256_hex(l)).collect();
    let mut image_config = json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": {"Env": config.env},
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>(),
        },
        "history": layers.iter().map(|_| json!({"created_by": "tug"})).collect::<Vec<_>>(),
    });
    if !config.entrypoint.is_empty() {
        image_config["config"]["Entrypoint"] = json!(config.entrypoint);
    }
    if !config.cmd.is_empty() {
        image_config["config"]["Cmd"] = json!(config.cmd);
    }
    if !config.user.is_empty() {
        image_config["config"]["User"] = json!(config.user);
    }
    let image_config = serde_json::to_vec(&image_config)?;
    let config_file = format!("{}.json", sha256_hex(&image_config));
    let layer_files: Vec<String> = diff_ids.iter().map(|d| format!("{d}/layer.tar")).collect();
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_file,
        "RepoTags": [name],
        "Layers": layer_files,
    }]))?;
    let mut entries = vec![Entry::File {
        path: &config_file,
        mode: 0o644,
        data: &image_config,
    }];
    for ((diff_id, file), layer) in diff_ids.iter().zip(&layer_files).zip(layers) {
        entries.push(Entry::Dir { path: diff_id });
        entries.push(Entry::File {
            path: file,
            mode: 0o644,
            data: layer,
        });
    }
    entries.push(Entry::File {
        path: "manifest.json",
        mode: 0o644,
        data: &manifest,
    });
    tar(&entries)
}

/// The architecture as OCI images name it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// tug's pause program: a static x86-64 ELF executable of 102 bytes of
/// code. It blocks every signal, then waits for SIGINT, SIGTERM or SIGCHLD
/// (rt_sigtimedwait): SIGCHLD reaps every exited child (wait4 with
/// WNOHANG until none), SIGINT and SIGTERM exit 0. It is the pod's PID 1
/// when the pod shares its process namespace, hence the reaping.
#[rustfmt::skip]
const PAUSE_CODE: [u8; 118] = [
    // rt_sigprocmask(SIG_BLOCK, &ALL, NULL, 8)
    0xb8, 0x0e, 0x00, 0x00, 0x00,             // mov eax, 14
    0x31, 0xff,                               // xor edi, edi
    0x48, 0x8d, 0x35, 0x58, 0x00, 0x00, 0x00, // lea rsi, [rip + ALL]
    0x31, 0xd2,                               // xor edx, edx
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00,       // mov r10d, 8
    0x0f, 0x05,                               // syscall
    // wait: rt_sigtimedwait(&WANTED, NULL, NULL, 8)
    0xb8, 0x80, 0x00, 0x00, 0x00,             // mov eax, 128
    0x48, 0x8d, 0x3d, 0x4a, 0x00, 0x00, 0x00, // lea rdi, [rip + WANTED]
    0x31, 0xf6,                               // xor esi, esi
    0x31, 0xd2,                               // xor edx, edx
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00,       // mov r10d, 8
    0x0f, 0x05,                               // syscall
    0x83, 0xf8, 0x11,                         // cmp eax, SIGCHLD
    0x74, 0x0c,                               // je reap
    0x83, 0xf8, 0x02,                         // cmp eax, SIGINT
    0x74, 0x23,                               // je quit
    0x83, 0xf8, 0x0f,                         // cmp eax, SIGTERM
    0x74, 0x1e,                               // je quit
    0xeb, 0xd7,                               // jmp wait
    // reap: wait4(-1, NULL, WNOHANG, NULL) while it returns a child
    0xb8, 0x3d, 0x00, 0x00, 0x00,             // mov eax, 61
    0xbf, 0xff, 0xff, 0xff, 0xff,             // mov edi, -1
    0x31, 0xf6,                               // xor esi, esi
    0xba, 0x01, 0x00, 0x00, 0x00,             // mov edx, 1
    0x45, 0x31, 0xd2,                         // xor r10d, r10d
    0x0f, 0x05,                               // syscall
    0x85, 0xc0,                               // test eax, eax
    0x7f, 0xe6,                               // jg reap
    0xeb, 0xbb,                               // jmp wait
    // quit: exit(0)
    0xb8, 0x3c, 0x00, 0x00, 0x00,             // mov eax, 60
    0x31, 0xff,                               // xor edi, edi
    0x0f, 0x05,                               // syscall
    // ALL: every signal
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    // WANTED: SIGINT, SIGTERM, SIGCHLD (bit n-1 for signal n)
    0x02, 0x40, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// The pause program as an ELF executable: the ELF header, one loadable
/// segment (read and execute) holding the whole file at 0x400000, then the
/// code, which is where execution starts.
pub fn pause_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let size = HEADERS + PAUSE_CODE.len() as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // ELF header: 64-bit, little-endian, version 1, System V ABI.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: executable
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    // Program header: PT_LOAD, PF_R | PF_X, the whole file.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&size.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&size.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    elf.extend_from_slice(&PAUSE_CODE);
    elf
}

/// The pause image as a Docker archive: `/pause` and nothing else.
pub fn pause_archive() -> anyhow::Result<Vec<u8>> {
    if std::env::consts::ARCH != "x86_64" {
        bail!(
            "tug's pause image is built for x86-64 only, not {}",
            std::env::consts::ARCH
        );
    }
    let elf = pause_elf();
    let layer = tar(&[Entry::File {
        path: "pause",
        mode: 0o755,
        data: &elf,
    }])?;
    docker_archive(
        PAUSE_IMAGE,
        &[layer],
        &ImageConfig {
            entrypoint: &["/pause"],
            user: "65535:65535",
            ..Default::default()
        },
    )
}

/// The archive names `import` takes, as k3s's: a tar, or one compressed
/// with gzip or zstd (and the program that decompresses it).
pub fn archive_kind(path: &Path) -> Option<Option<&'static str>> {
    let name = path.file_name()?.to_str()?;
    if name.ends_with(".tar") {
        Some(None)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Some(Some("gzip"))
    } else if name.ends_with(".tar.zst") || name.ends_with(".tar.zstd") {
        Some(Some("zstd"))
    } else {
        None
    }
}

/// Imports a Docker or OCI archive (a tar, or one compressed with gzip or
/// zstd) into containerd at `socket`, in the namespace CRI reads, unpacked
/// for this machine (through containerd's `ctr`, which ships with it and
/// reads only plain tars: a compressed one is decompressed on the way).
/// Answers the names of the images imported.
pub async fn import(socket: &Path, archive: &Path) -> anyhow::Result<Vec<String>> {
    let Some(decompressor) = archive_kind(archive) else {
        bail!(
            "{}: not an image archive (.tar, .tar.gz, .tgz, .tar.zst)",
            archive.display()
        );
    };
    let mut ctr = tokio::process::Command::new("ctr");
    ctr.arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io", "images", "import"]);
    let mut decompressing = None;
    if let Some(program) = decompressor {
        let mut child = tokio::process::Command::new(program)
            .arg("-dc")
            .arg(archive)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {program} to decompress {}", archive.display()))?;
        let stdout: std::process::Stdio = child
            .stdout
            .take()
            .context("the decompressor's output")?
            .try_into()
            .context("the decompressor's output")?;
        ctr.arg("-").stdin(stdout);
        decompressing = Some((program, child));
    } else {
        ctr.arg(archive);
    }
    let output = ctr
        .output()
        .await
        .context("running ctr (containerd's client) to import an image")?;
    if let Some((program, child)) = decompressing {
        let done = child.wait_with_output().await?;
        if !done.status.success() {
            bail!(
                "decompressing {}: {}",
                archive.display(),
                String::from_utf8_lossy(&done.stderr)
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or(program)
            );
        }
    }
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "importing {}: {}",
            archive.display(),
            stderr.trim().lines().last().unwrap_or("ctr failed")
        );
    }
    Ok(imported_names(&String::from_utf8_lossy(&output.stdout)))
}

/// The names in ctr's report of an import: a line `unpacking NAME
/// (DIGEST)...done` per image.
fn imported_names(report: &str) -> Vec<String> {
    report
        .lines()
        .filter_map(|line| line.strip_prefix("unpacking ")?.split_once(" (sha"))
        .map(|(name, _)| name.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_known_by_their_names_compressed_or_not() {
        for (name, kind) in [
            ("a/busybox.tar", Some(None)),
            ("busybox.tar.gz", Some(Some("gzip"))),
            ("busybox.tgz", Some(Some("gzip"))),
            ("busybox.tar.zst", Some(Some("zstd"))),
            ("busybox.tar.zstd", Some(Some("zstd"))),
            ("busybox.zip", None),
            ("notes.txt", None),
            ("tar", None),
        ] {
            assert_eq!(archive_kind(Path::new(name)), kind, "{name}");
        }
    }

    #[test]
    fn the_names_imported_are_read_from_ctrs_report() {
        let report = "unpacking tug.local/oci:1 (sha256:9d20ab)...done\n\
                      unpacking docker.io/library/busybox:latest (sha256:0483ce)...done\n";
        assert_eq!(
            imported_names(report),
            ["tug.local/oci:1", "docker.io/library/busybox:latest"]
        );
        assert!(imported_names("").is_empty());
    }

    #[test]
    fn a_tar_header_carries_its_checksum_and_long_paths_split() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let archive = tar(&[Entry::File {
            path: &long,
            mode: 0o600,
            data: b"hello",
        }])
        .unwrap();
        assert_eq!(archive.len(), 512 + 512 + 1024);
        let header = &archive[..512];
        assert_eq!(&header[..90], "f".repeat(90).as_bytes());
        assert_eq!(&header[345..465], "d".repeat(120).as_bytes());
        assert_eq!(&header[124..135], b"00000000005");
        let stored = u32::from_str_radix(std::str::from_utf8(&header[148..154]).unwrap(), 8);
        let mut blank = header.to_vec();
        blank[148..156].fill(b' ');
        assert_eq!(
            stored.unwrap(),
            blank.iter().map(|b| u32::from(*b)).sum::<u32>()
        );
        assert_eq!(&archive[512..517], b"hello");
        assert!(
            tar(&[Entry::Dir {
                path: &"x".repeat(300)
            }])
            .is_err()
        );
    }

    #[test]
    fn the_pause_program_is_an_elf_whose_entry_is_its_code() {
        let elf = pause_elf();
        assert_eq!(&elf[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, 0x40_0000 + 120);
        let filesz = u64::from_le_bytes(elf[64 + 32..64 + 40].try_into().unwrap());
        assert_eq!(filesz as usize, elf.len());
        // The two signal sets end the program, 8 bytes each, where the
        // RIP-relative leas point (0x58 after offset 14, 0x4a after 36).
        assert_eq!(&elf[120 + 14 + 0x58..120 + 14 + 0x58 + 8], &[0xff; 8]);
        assert_eq!(elf[120 + 36 + 0x4a], 0x02);
    }
}
