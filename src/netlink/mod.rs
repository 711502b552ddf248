//! Kernel networking state over rtnetlink. [`addr`]: the VIP addresses on the loopback
//! (dump, then subscribe; repair drift; touch only what is marked as kube-gw's).

pub mod addr;
