//! Training with fixed masks: the masked optimizers (SGD, Adam; pruned weights stay exactly
//! zero, their optimizer state too) in [`optim`], the learning-rate schedule and loss in [`train`].

pub mod optim;
pub mod train;
