//! Closed sets of words on the wire (alert kinds, states, events) as Rust
//! enums that serialize to exactly their wire text.
//!
//! Each set is *open* to the future: a value this version does not know
//! (a newer gateway's new alert kind, say) is kept as `Other(text)` rather
//! than refused, so a reader of mixed versions never rejects a whole
//! document, or a whole list, for one new word.

/// Declares a vocabulary: an enum of known words, each with its wire text,
/// plus `Other(String)`; `as_str`, `parse`, `Display`, and serde as a plain
/// string.
#[macro_export]
#[doc(hidden)]
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A word this version does not know, kept as it was sent.
            Other(::std::string::String),
        }

        impl $name {
            /// Every known word, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire text.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )+
                    $name::Other(text) => text.as_str(),
                }
            }

            /// The word for `text`; `Other` when it is not a known one.
            pub fn parse(text: &str) -> $name {
                match text {
                    $( $text => $name::$variant, )+
                    other => $name::Other(other.into()),
                }
            }

            /// The word for `text` when it is a known one.
            pub fn known(text: &str) -> ::core::option::Option<$name> {
                match $name::parse(text) {
                    $name::Other(_) => None,
                    word => Some(word),
                }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <::std::string::String>::deserialize(d)?;
                Ok($name::parse(&text))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::format;
    use std::string::ToString;

    crate::vocabulary! {
        /// A test set.
        pub enum Colour {
            Red = "red",
            DarkBlue = "dark_blue",
        }
    }

    #[test]
    fn known_words_go_out_as_their_wire_text_and_come_back() {
        assert_eq!(
            serde_json::to_string(&Colour::DarkBlue).unwrap(),
            "\"dark_blue\""
        );
        let back: Colour = serde_json::from_str("\"red\"").unwrap();
        assert_eq!(back, Colour::Red);
        assert_eq!(Colour::DarkBlue.to_string(), "dark_blue");
        assert_eq!(
            format!("{:<6}|", Colour::Red),
            "red   |",
            "tables pad words"
        );
        assert_eq!(Colour::ALL, &[Colour::Red, Colour::DarkBlue]);
    }

    #[test]
    fn an_unknown_word_is_kept_as_sent_not_refused() {
        let back: Colour = serde_json::from_str("\"ultraviolet\"").unwrap();
        assert_eq!(back, Colour::Other("ultraviolet".into()));
        assert_eq!(serde_json::to_string(&back).unwrap(), "\"ultraviolet\"");
        assert_eq!(Colour::known("ultraviolet"), None);
        assert_eq!(Colour::known("red"), Some(Colour::Red));
    }

    #[test]
    fn words_work_as_json_map_keys() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(Colour::Red, 1u8);
        let text = serde_json::to_string(&map).unwrap();
        assert_eq!(text, "{\"red\":1}");
        let back: std::collections::BTreeMap<Colour, u8> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, map);
    }
}
