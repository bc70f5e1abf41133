//! `offplan run` (being built; see the open issues).

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`offplan run` is not built yet")
}
