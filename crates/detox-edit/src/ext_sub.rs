//! Ext-Sub (Hu et al., AAAI 2024, "Separate the Wheat from the Chaff"): subtract from an expert module trained on
//! safe data only the *deficiency* part of an anti-expert trained on unsafe data.
//!
//! Both modules are compared as merged updates `ΔW = scale · B A`. Row by row, the direction shared by the two
//! (the normalised sum of their normalised rows) stands for general ability; the anti-expert's projection on it
//! is kept and only the rest is subtracted:
//! `ΔW = ΔW⁺ - λ ΔW⁻ + λ (ΔW⁻ᵢ · cᵢ) cᵢ`, with `cᵢ = (n⁺ᵢ + n⁻ᵢ) / ‖n⁺ᵢ + n⁻ᵢ‖` and `n±ᵢ = ΔW±ᵢ / ‖ΔW±ᵢ‖`.

use tch::{Kind, Tensor};

use crate::delta::Delta;
use crate::error::{torch, EditError, Result};

/// Rows shorter than this count as zero: their normalised direction is taken as zero instead of dividing by
/// zero (the reference would produce NaN), so a zero expert row keeps the anti-expert's row whole in the shared
/// direction and a zero anti-expert row subtracts nothing.
const TINY: f64 = 1e-30;

/// The Ext-Sub combination of `expert` and `anti_expert` with weight `lambda` (the reference's `alpha`, default
/// 1.0). Both deltas must touch the same parameters with the same shapes.
pub fn extract_and_subtract(expert: &Delta, anti_expert: &Delta, lambda: f64) -> Result<Delta> {
    let mut out = Delta::new();
    let expert_names: Vec<&str> = expert.names().collect();
    let anti_names: Vec<&str> = anti_expert.names().collect();
    if expert_names.len() != anti_names.len()
        || expert_names.iter().any(|n| !anti_names.contains(n))
    {
        return Err(EditError::InvalidConfig {
            method: "Ext-Sub".into(),
            reason: format!(
                "the two modules must cover the same parameters: the expert has {expert_names:?}, the \
                 anti-expert {anti_names:?}"
            ),
        });
    }
    for name in expert_names {
        let plus = expert.get(name).expect("name listed by the delta");
        let minus = anti_expert.get(name).expect("checked above");
        if plus.size() != minus.size() {
            return Err(EditError::ShapeMismatch {
                what: format!("Ext-Sub: the anti-expert's `{name}`"),
                expected: format!("{:?} (the expert's)", plus.size()),
                got: minus.size(),
            });
        }
        out.add(
            name,
            &combine(plus, &minus.f_to_device(plus.device()).map_err(torch("Ext-Sub"))?, lambda)?,
        )?;
    }
    Ok(out)
}

/// One parameter's combination.
///
/// # Shapes
/// `plus`, `minus`: `[out, in]` fp32; returns `[out, in]`.
fn combine(plus: &Tensor, minus: &Tensor, lambda: f64) -> Result<Tensor> {
    let e = |r: std::result::Result<Tensor, tch::TchError>| r.map_err(torch("Ext-Sub"));
    let unit = |t: &Tensor| -> Result<Tensor> {
        let norm = e(t.f_norm_scalaropt_dim(2, [-1i64].as_slice(), true))?;
        e(t.f_div(&e(norm.f_clamp_min(TINY))?))
    };
    let plus = e(plus.f_to_kind(Kind::Float))?;
    let minus = e(minus.f_to_kind(Kind::Float))?;
    let common = unit(&e(unit(&plus)?.f_add(&unit(&minus)?))?)?;
    let along = e(e(minus.f_mul(&common))?.f_sum_dim_intlist(-1, true, Kind::Float))?;
    let shared = e(along.f_mul(&common))?;
    let deficiency = e(minus.f_sub(&shared))?;
    e(plus.f_sub(&e(deficiency.f_mul_scalar(lambda))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(rows: &[f32]) -> Delta {
        let mut d = Delta::new();
        d.add("w", &Tensor::from_slice(rows).view([2, 2])).unwrap();
        d
    }

    fn values(d: &Delta) -> Vec<f32> {
        Vec::<f32>::try_from(d.get("w").unwrap().reshape([-1])).unwrap()
    }

    #[test]
    fn matches_the_combination_worked_by_hand() {
        // Row 0: n+ = (1,0), n- = (0,1), c = (1,1)/√2, (a·c)c = (0.5,0.5): (1,0) - (0,1) + (0.5,0.5).
        // Row 1: both rows point along (0,1): the anti-expert is all shared ability and nothing is subtracted.
        let out = extract_and_subtract(&delta(&[1., 0., 0., 1.]), &delta(&[0., 1., 0., 1.]), 1.0)
            .unwrap();
        let got = values(&out);
        for (g, w) in got.iter().zip([1.5f32, -0.5, 0.0, 1.0]) {
            approx::assert_abs_diff_eq!(*g, w, epsilon = 1e-6);
        }
    }

    #[test]
    fn lambda_zero_keeps_the_expert_and_zero_rows_stay_finite() {
        let expert = delta(&[0.3, -0.2, 0.0, 0.0]);
        let out = extract_and_subtract(&expert, &delta(&[0.5, 0.5, 0.0, 0.0]), 0.0).unwrap();
        assert_eq!(values(&out), values(&expert));
        let out = extract_and_subtract(&expert, &delta(&[0.5, 0.5, 0.0, 0.0]), 1.0).unwrap();
        assert!(values(&out).iter().all(|v| v.is_finite()));
    }

    #[test]
    fn mismatched_modules_are_refused() {
        let mut other = Delta::new();
        other.add("v", &Tensor::zeros([2, 2], (Kind::Float, tch::Device::Cpu))).unwrap();
        assert!(extract_and_subtract(&delta(&[1., 0., 0., 1.]), &other, 1.0).is_err());
    }
}
