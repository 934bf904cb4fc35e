//! [`section!`](crate::section): how a layer declares its config section.

/// Declares a layer's config section as two types from one field list:
///
/// - the **section** (`$section`): what a config file holds, every field
///   optional (absent = take it from the level below), serde with unknown
///   keys refused; `merged` layers one over another (`[defaults]`, then
///   a provider's own);
/// - the **settings** (`$settings`): every field decided, its
///   [`Default`] the built-in defaults given here; `merged` applies a
///   section over them.
///
/// The crate calling it needs `serde` (with `derive`) as a dependency.
/// Checking values is not done here: the layer's section module builds the
/// layer from the settings, so its builder's rule is the only one.
///
/// ```
/// palisade_core::section! {
///     /// `[..pool]`: a pool's size.
///     PoolSection => PoolSettings {
///         /// Connections (default 8).
///         size: usize = 8,
///         /// Whether the pool is on (default true).
///         enabled: bool = true,
///     }
/// }
///
/// let defaults: PoolSection = toml_like(r#"{ "size": 16 }"#);
/// let provider: PoolSection = toml_like(r#"{ "enabled": false }"#);
/// let s = PoolSettings::default().merged(&defaults).merged(&provider);
/// assert_eq!(s, PoolSettings { size: 16, enabled: false });
/// assert_eq!(PoolSettings::default().size, 8);
/// # fn toml_like(s: &str) -> PoolSection { serde_json::from_str(s).unwrap() }
/// ```
#[macro_export]
macro_rules! section {
    (
        $(#[$meta:meta])*
        $section:ident => $settings:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[$meta])*
        ///
        /// Every field is optional: what is absent comes from the level
        /// below.
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $section {
            $(
                $(#[$fmeta])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl $section {
            /// `over`'s fields where it sets them, ours elsewhere.
            pub fn merged(&self, over: &Self) -> Self {
                $section { $( $field: over.$field.clone().or_else(|| self.$field.clone()), )* }
            }
        }

        #[doc = concat!("[`", stringify!($section), "`] with every field decided; its `Default` is the built-in defaults.")]
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        pub struct $settings {
            $(
                $(#[$fmeta])*
                pub $field: $ty,
            )*
        }

        impl Default for $settings {
            fn default() -> Self {
                $settings { $( $field: $default, )* }
            }
        }

        impl $settings {
            /// These settings with `over`'s fields where it sets them.
            pub fn merged(&self, over: &$section) -> Self {
                $settings {
                    $( $field: match &over.$field {
                        Some(v) => v.clone(),
                        None => self.$field.clone(),
                    }, )*
                }
            }
        }
    };
}
