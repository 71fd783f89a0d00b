//! The CJK font charts are drawn with. Plotters' text needs a font file of ours (no system lookup):
//! the configured one, else the first of the usual CJK fonts found. A font that lacks Chinese is
//! refused, so a chart fails with a clear error instead of drawing boxes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::Font;

use crate::ChartError;

/// Where Debian (`fonts-noto-cjk`, which `scripts/install-deps` installs), other distributions and
/// macOS keep a CJK font.
const KNOWN: [&str; 7] = [
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/System/Library/Fonts/PingFang.ttc",
];

/// Characters every chart title and footer may use; a font missing one is not used.
const MUST_COVER: &str = "贵州茅台收盘价市盈率净总值日涨跌幅近年月数据来源取于模拟沙箱较首元亿倍0123456789.%-";

/// The font charts draw with, loaded on first use (a CJK font file is ~20 MB).
#[derive(Debug, Default)]
pub struct Fonts {
    configured: Option<PathBuf>,
    loaded: OnceLock<Result<String, String>>,
}

impl Fonts {
    /// `configured` is the font file to use; `None` looks in the usual places.
    pub fn new(configured: Option<PathBuf>) -> Fonts {
        Fonts { configured, loaded: OnceLock::new() }
    }

    /// The plotters font family to draw text with, loading and registering the font first.
    pub(crate) fn family(&self) -> Result<&str, ChartError> {
        self.loaded.get_or_init(|| self.load()).as_deref().map_err(|message| ChartError::NoFont(message.clone()))
    }

    fn load(&self) -> Result<String, String> {
        let candidates: Vec<&Path> = match &self.configured {
            Some(path) => vec![path],
            None => KNOWN.iter().map(Path::new).filter(|path| path.exists()).collect(),
        };
        let mut refused = Vec::new();
        for path in candidates {
            match register(path) {
                Ok(family) => {
                    tracing::info!(font = %path.display(), "charts draw with this font");
                    return Ok(family);
                }
                Err(why) => refused.push(format!("{}: {why}", path.display())),
            }
        }
        Err(if refused.is_empty() {
            format!("no CJK font found (looked for {}); install fonts-noto-cjk or set [chart] font", KNOWN.join(", "))
        } else {
            format!("no usable CJK font: {}", refused.join("; "))
        })
    }
}

/// Reads the font at `path`, checks it covers Chinese, and registers it with plotters under its
/// path, which is then the family name to draw with.
fn register(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let font = ab_glyph::FontRef::try_from_slice(&bytes).map_err(|e| format!("not a font: {e}"))?;
    let missing: String = MUST_COVER.chars().filter(|c| font.glyph_id(*c).0 == 0).collect();
    if !missing.is_empty() {
        return Err(format!("has no glyph for {missing}"));
    }
    // Plotters keeps registered fonts for the life of the process; one per path is loaded once.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    let family = path.display().to_string();
    plotters::style::register_font(&family, plotters::style::FontStyle::Normal, bytes).map_err(|_| "plotters refused it".to_string())?;
    Ok(family)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_font_without_chinese_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("twilight-font-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.ttf");
        std::fs::write(&junk, b"not a font").unwrap();
        let error = Fonts::new(Some(junk.clone())).family().unwrap_err().to_string();
        assert!(error.contains("junk.ttf") && error.contains("not a font"), "{error}");
        // Installed by scripts/install-deps: Latin glyphs only.
        let latin = Fonts::new(Some("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into())).family().unwrap_err().to_string();
        assert!(latin.contains("DejaVuSans.ttf: has no glyph for 贵州茅台"), "{latin}");
        let missing = Fonts::new(Some(dir.join("absent.ttc"))).family().unwrap_err().to_string();
        assert!(missing.contains("absent.ttc"), "{missing}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
