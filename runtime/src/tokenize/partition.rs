//! Splitting text at special tokens before BPE, in llama.cpp's order: each special token,
//! longest text first, is cut out of every remaining text fragment, left to right.

use std::ops::Range;

use super::TokenAttr;

/// A piece of the input: text still to be tokenized, or a token matched literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

/// The ids that are matched in text (control, user-defined and unknown tokens with non-empty
/// text), ordered by text length, longest first; ties keep id order so the result is stable.
pub(crate) fn order(tokens: &[String], attrs: &[TokenAttr]) -> Vec<u32> {
    let mut ids: Vec<u32> = attrs
        .iter()
        .enumerate()
        .filter(|(i, attr)| {
            matches!(
                attr,
                TokenAttr::Control | TokenAttr::UserDefined | TokenAttr::Unknown
            ) && tokens.get(*i).is_some_and(|t| !t.is_empty())
        })
        .filter_map(|(i, _)| u32::try_from(i).ok())
        .collect();
    ids.sort_by_key(|&id| std::cmp::Reverse(tokens[id as usize].len()));
    ids
}

/// Split `text` at the tokens of `order`. Control and unknown tokens are matched only when
/// `parse_special`; user-defined tokens always are.
pub(crate) fn split(
    text: &str,
    order: &[u32],
    tokens: &[String],
    attrs: &[TokenAttr],
    parse_special: bool,
) -> Vec<Fragment> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut fragments = vec![Fragment::Text(0..text.len())];
    for &id in order {
        let attr = attrs[id as usize];
        if !parse_special && attr != TokenAttr::UserDefined {
            continue;
        }
        let needle = tokens[id as usize].as_str();
        let mut next = Vec::with_capacity(fragments.len() + 2);
        for fragment in fragments {
            let Fragment::Text(range) = fragment else {
                next.push(fragment);
                continue;
            };
            let mut pos = range.start;
            while let Some(found) = text[pos..range.end].find(needle) {
                let start = pos + found;
                if start > pos {
                    next.push(Fragment::Text(pos..start));
                }
                next.push(Fragment::Token(id));
                pos = start + needle.len();
            }
            if pos < range.end {
                next.push(Fragment::Text(pos..range.end));
            }
        }
        fragments = next;
    }
    fragments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_token_wins_and_parse_special_gates_control_tokens() {
        let tokens: Vec<String> = ["<a>", "<a><b>", "x", "<u>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let attrs = [
            TokenAttr::Control,
            TokenAttr::Control,
            TokenAttr::Normal,
            TokenAttr::UserDefined,
        ];
        let order = order(&tokens, &attrs);
        assert_eq!(order, vec![1, 0, 3]);
        let text = "q<a><b>r<a><u>";
        let parsed = split(text, &order, &tokens, &attrs, true);
        assert_eq!(
            parsed,
            vec![
                Fragment::Text(0..1),
                Fragment::Token(1),
                Fragment::Text(7..8),
                Fragment::Token(0),
                Fragment::Token(3),
            ]
        );
        let plain = split(text, &order, &tokens, &attrs, false);
        assert_eq!(plain, vec![Fragment::Text(0..11), Fragment::Token(3)]);
    }
}
