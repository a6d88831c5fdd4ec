pub fn run(_a: crate::commands::DemoArgs, _q: bool) -> anyhow::Result<()> { Ok(()) }
