//! HTML building blocks of the report: escaping and tables.

use std::fmt::Write as _;

/// `text` safe to put in HTML element content and in quoted attribute values (and in SVG).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number with `digits` decimals, or `–` when there is none.
pub fn number(value: Option<f64>, digits: usize) -> String {
    value.filter(|v| v.is_finite()).map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

/// A table of class `class`. `head` is plain text (escaped here); `rows` hold HTML, which the caller has escaped.
/// The first column is a row header.
pub fn table(class: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut html = format!(r#"<table class="{}"><thead><tr>"#, escape(class));
    for h in head {
        let _ = write!(html, "<th scope=\"col\">{}</th>", escape(h));
    }
    html.push_str("</tr></thead><tbody>");
    for row in rows {
        html.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            if i == 0 {
                let _ = write!(html, "<th scope=\"row\">{cell}</th>");
            } else {
                let _ = write!(html, "<td>{cell}</td>");
            }
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_both_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn tables_escape_their_head_and_keep_cells() {
        let html = table("t", &["a<b", "c"], &[vec!["x".into(), "<b>1</b>".into()]]);
        assert!(html.contains("<th scope=\"col\">a&lt;b</th>"));
        assert!(html.contains("<th scope=\"row\">x</th><td><b>1</b></td>"));
        assert_eq!(number(None, 1), "–");
        assert_eq!(number(Some(f64::NAN), 1), "–");
        assert_eq!(number(Some(12.345), 1), "12.3");
    }
}
