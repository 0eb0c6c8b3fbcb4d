//! `tug images`: the node agent's images, imported from archives or
//! listed, through its containerd.

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::cli::{ImagesArgs, ImagesCommand};

fn socket(args: &ImagesArgs) -> PathBuf {
    args.container_runtime_endpoint.clone().unwrap_or_else(|| {
        tug_kubelet::containerd::Layout::new(&args.data_dir.join("agent")).socket()
    })
}

pub(crate) async fn run(args: ImagesArgs) -> anyhow::Result<()> {
    let socket = socket(&args);
    if !socket.exists() {
        bail!(
            "no container runtime at {} (is tug running with --data-dir {}?)",
            socket.display(),
            args.data_dir.display()
        );
    }
    match &args.command {
        ImagesCommand::Import { files } => {
            for file in files {
                if !file.is_file() {
                    bail!("{} is not a file", file.display());
                }
                let names = tug_kubelet::images::import(&socket, file).await?;
                if names.is_empty() {
                    println!("imported {}", file.display());
                }
                for name in names {
                    println!("imported {name}");
                }
            }
        }
        ImagesCommand::List => {
            let runtime = tug_kubelet::cri::Runtime::connect(&socket)?;
            let images = runtime
                .list_images()
                .await
                .with_context(|| format!("listing the images at {}", socket.display()))?;
            let mut rows: Vec<[String; 4]> = Vec::new();
            for image in images {
                let id = image.id.trim_start_matches("sha256:");
                let size = human_size(image.size);
                let tags = if image.repo_tags.is_empty() {
                    vec!["<none>:<none>".to_string()]
                } else {
                    image.repo_tags.clone()
                };
                for tag in tags {
                    let (repository, tag) = tag.rsplit_once(':').unwrap_or((&tag, "<none>"));
                    rows.push([
                        repository.to_string(),
                        tag.to_string(),
                        id.chars().take(13).collect(),
                        size.clone(),
                    ]);
                }
            }
            rows.sort();
            print_table(&["IMAGE", "TAG", "IMAGE ID", "SIZE"], &rows);
        }
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    // Three significant digits, without trailing zeros (Go's %.3g, as
    // crictl prints sizes).
    let integer_digits = (value.max(1.0).log10().floor() as usize) + 1;
    let decimals = 3usize.saturating_sub(integer_digits);
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", units[unit])
}

fn print_table(header: &[&str; 4], rows: &[[String; 4]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(*header);
    for row in rows {
        line([&row[0], &row[1], &row[2], &row[3]]);
    }
}
