//! QR codes as inline SVG, for the payment and pairing pages: no image files, no external service.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

use crate::ApiError;

/// `text` as a standalone SVG image with a quiet zone, scaled by the page (it has a `viewBox`).
pub fn svg(text: &str) -> Result<String, ApiError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|error| ApiError::invalid("qr", format!("cannot encode a QR code: {error}")))?;
    Ok(code.render::<svg::Color>().min_dimensions(240, 240).quiet_zone(true).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_image_per_text() {
        let image = svg("weixin://wxpay/bizpayurl?pr=abc123").unwrap();
        assert!(image.contains("<svg") && image.trim_end().ends_with("</svg>"), "{image}");
        assert_eq!(image, svg("weixin://wxpay/bizpayurl?pr=abc123").unwrap());
        assert_ne!(image, svg("weixin://wxpay/bizpayurl?pr=abc124").unwrap());
    }
}
