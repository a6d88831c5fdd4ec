//! The pool every attack runs on: a working batch of rows (one sample each, at its own step,
//! restart or query count), refilled from the [`SampleSource`] as rows retire, so that every
//! model pass is spent on samples that are still being attacked.
//!
//! An attack writes two things: how a chunk of new samples becomes rows (`admit`) and one round
//! of work on the pool (`round`), which hands finished samples to the sink and drops their rows.
//! [`drive`] owns the take / refill / retire loop. Row state that lives in batch tensors (one
//! row per sample) is a struct of [`Column`]s; [`row_set!`](crate::row_set) gives it generic
//! [`RowSet::pick`] and [`Pooled::join`], so no attack splits and joins its fields by hand.
use super::{Chunk, SampleSource};
use crate::error::Result;
use tch::{Device, Tensor};

/// A pool's row state: how many rows it holds and how fresh rows join it.
pub(crate) trait Pooled {
    /// Rows in the pool.
    fn len(&self) -> usize;
    /// The pool's rows followed by those of `fresh`.
    fn join(self, fresh: Self) -> Self;
}

impl<T> Pooled for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn join(mut self, fresh: Self) -> Self {
        self.extend(fresh);
        self
    }
}

/// Runs the pool: while it holds fewer than `capacity` rows and the source has samples, new
/// samples are taken and admitted; then one `round` runs. Ends when the source is exhausted
/// and the pool is empty.
pub(crate) fn drive<P: Pooled>(
    source: &mut dyn SampleSource,
    capacity: usize,
    mut admit: impl FnMut(Chunk) -> Result<P>,
    mut round: impl FnMut(&mut P) -> Result<()>,
) -> Result<()> {
    let capacity = capacity.max(1);
    let mut pool: Option<P> = None;
    let mut exhausted = false;
    loop {
        let active = pool.as_ref().map_or(0, P::len);
        if active < capacity && !exhausted {
            match source.take(capacity - active)? {
                None => exhausted = true,
                Some(chunk) => {
                    let fresh = admit(chunk)?;
                    pool = Some(match pool.take() {
                        None => fresh,
                        Some(p) => p.join(fresh),
                    });
                    continue;
                }
            }
        }
        match pool.as_mut() {
            Some(p) if p.len() > 0 => round(p)?,
            _ => return Ok(()),
        }
    }
}

/// The rows a round keeps, in order, as positions in the pool (and as an index tensor on the
/// pool's device, made once for every tensor column).
pub(crate) struct Keep {
    rows: Vec<i64>,
    tensor: Tensor,
}

impl Keep {
    /// Keeps rows `rows` of a pool whose tensors live on `device`.
    pub fn new(rows: Vec<i64>, device: Device) -> Keep {
        let tensor = Tensor::from_slice(&rows).to_device(device);
        Keep { rows, tensor }
    }
}

/// One field of a row set: a value per row.
pub(crate) trait Column: Sized {
    /// Rows held.
    fn rows(&self) -> usize;
    /// The kept rows, in order.
    fn pick(&self, keep: &Keep) -> Self;
    /// These rows followed by `other`'s.
    fn join(self, other: Self) -> Self;
}

impl<T: Clone> Column for Vec<T> {
    fn rows(&self) -> usize {
        self.len()
    }
    fn pick(&self, keep: &Keep) -> Self {
        keep.rows.iter().map(|&i| self[i as usize].clone()).collect()
    }
    fn join(mut self, other: Self) -> Self {
        self.extend(other);
        self
    }
}

impl Column for Tensor {
    fn rows(&self) -> usize {
        self.size().first().map_or(0, |&n| n as usize)
    }
    fn pick(&self, keep: &Keep) -> Self {
        self.index_select(0, &keep.tensor)
    }
    fn join(self, other: Self) -> Self {
        Tensor::cat(&[self, other], 0)
    }
}

/// Optional columns (targets of targeted goals) are present for every row or for none.
impl Column for Option<Tensor> {
    fn rows(&self) -> usize {
        self.as_ref().map_or(0, Column::rows)
    }
    fn pick(&self, keep: &Keep) -> Self {
        self.as_ref().map(|t| t.pick(keep))
    }
    fn join(self, other: Self) -> Self {
        match (self, other) {
            (Some(a), Some(b)) => Some(a.join(b)),
            _ => None,
        }
    }
}

/// Row state held as columns: [`RowSet::pick`] keeps rows, [`Pooled::join`] appends.
pub(crate) trait RowSet: Pooled + Sized {
    /// The kept rows, in order.
    fn pick(&self, keep: &Keep) -> Self;
}

/// Implements [`RowSet`] and [`Pooled`] for a struct of [`Column`]s. Name every field, the
/// first one a column that always holds every row (the struct literal fails to compile if a
/// field is left out): `row_set!(Rows { indices, step, x0, labels, targets });`
macro_rules! row_set {
    ($name:ident { $first:ident $(, $field:ident)* $(,)? }) => {
        impl $crate::attack::pool::Pooled for $name {
            fn len(&self) -> usize {
                $crate::attack::pool::Column::rows(&self.$first)
            }
            fn join(self, fresh: Self) -> Self {
                $name {
                    $first: $crate::attack::pool::Column::join(self.$first, fresh.$first),
                    $($field: $crate::attack::pool::Column::join(self.$field, fresh.$field),)*
                }
            }
        }
        impl $crate::attack::pool::RowSet for $name {
            fn pick(&self, keep: &$crate::attack::pool::Keep) -> Self {
                $name {
                    $first: $crate::attack::pool::Column::pick(&self.$first, keep),
                    $($field: $crate::attack::pool::Column::pick(&self.$field, keep),)*
                }
            }
        }
    };
}
pub(crate) use row_set;
