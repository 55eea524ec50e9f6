//! Progress display: indicatif bars (iterations, epochs, batches with loss and accuracy) when
//! stderr is a terminal, plain log lines when it is not (CI logs stay readable), nothing with
//! `--quiet`. Every status line also goes to the run's log file through `tracing`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live bars on stderr.
    Bars,
    /// One plain line per finished epoch / iteration on stderr.
    Plain,
    /// Nothing on stderr (the log file still gets every line).
    Quiet,
}

impl Mode {
    /// Bars on a terminal, plain lines otherwise, nothing when `quiet`.
    pub fn detect(quiet: bool) -> Self {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Plain
        }
    }
}

/// The progress display of one command.
#[derive(Debug, Clone)]
pub struct Progress {
    mode: Mode,
    multi: MultiProgress,
}

/// One bar (inert unless the display shows bars).
#[derive(Debug, Clone)]
pub struct Bar(Option<ProgressBar>);

impl Bar {
    /// Advances by `n`.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
    /// Sets the position.
    pub fn set_position(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.set_position(n);
        }
    }
    /// Sets the trailing message (loss, accuracy).
    pub fn set_message(&self, msg: impl Into<String>) {
        if let Some(b) = &self.0 {
            b.set_message(msg.into());
        }
    }
    /// Sets the leading label.
    pub fn set_prefix(&self, p: impl Into<String>) {
        if let Some(b) = &self.0 {
            b.set_prefix(p.into());
        }
    }
    /// Removes the bar from the display.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Progress {
    /// A display in `mode`.
    pub fn new(mode: Mode) -> Self {
        let multi = MultiProgress::new();
        if mode != Mode::Bars {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Self { mode, multi }
    }

    /// The display mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A new bar of `len` steps labelled `prefix`.
    pub fn bar(&self, len: u64, prefix: &str, unit: &str) -> Bar {
        if self.mode != Mode::Bars {
            return Bar(None);
        }
        let template = format!("{{prefix:>16.bold}} [{{bar:30.cyan/blue}}] {{pos:>5}}/{{len:<5}} {unit} {{elapsed_precise}} (eta {{eta}}) {{msg}}");
        let style = ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> ");
        let bar = self.multi.add(ProgressBar::new(len).with_style(style).with_prefix(prefix.to_string()));
        bar.enable_steady_tick(Duration::from_millis(250));
        Bar(Some(bar))
    }

    /// A status line: logged, and shown above the bars (bars), on stderr (plain) or not at all
    /// (quiet).
    pub fn line(&self, msg: &str) {
        tracing::info!("{msg}");
        match self.mode {
            Mode::Bars => {
                let _ = self.multi.println(msg);
            }
            Mode::Plain => eprintln!("{msg}"),
            Mode::Quiet => {}
        }
    }

    /// A warning: logged and always shown on stderr.
    pub fn warn(&self, msg: &str) {
        tracing::warn!("{msg}");
        let text = format!("warning: {msg}");
        match self.mode {
            Mode::Bars => {
                let _ = self.multi.println(text);
            }
            _ => eprintln!("{text}"),
        }
    }
}
