//! Log lines through defmt (microcontrollers) or the `log` crate (hosts):
//! the board's build picks one with a feature. Arguments are kept to
//! strings and integers, which both format the same way.

macro_rules! log_info {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        ::defmt::info!($($arg)*);
        #[cfg(feature = "log")]
        ::log::info!($($arg)*);
        // Neither (unit tests, tools): the arguments still count as used.
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        let _ = ::core::format_args!($($arg)*);
    }};
}

macro_rules! log_warn {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        ::defmt::warn!($($arg)*);
        #[cfg(feature = "log")]
        ::log::warn!($($arg)*);
        // Neither (unit tests, tools): the arguments still count as used.
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        let _ = ::core::format_args!($($arg)*);
    }};
}

macro_rules! log_error {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        ::defmt::error!($($arg)*);
        #[cfg(feature = "log")]
        ::log::error!($($arg)*);
        // Neither (unit tests, tools): the arguments still count as used.
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        let _ = ::core::format_args!($($arg)*);
    }};
}

pub(crate) use {log_error, log_info, log_warn};
