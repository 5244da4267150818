using Microsoft.ML.Data;

namespace TabularClassification;

// The input and output classes, as Model Builder generates them: one property per CSV column ([LoadColumn] = its position),
// and the columns a trainer adds. Missing numbers are empty fields in the CSV and load as NaN; missing text loads as "".

/// <summary>One day of seattle-weather (binary task: <see cref="Rain"/>).</summary>
public sealed class WeatherInput
{
    /// <summary>The day, yyyy-MM-dd (not a feature).</summary>
    [LoadColumn(0)] public string Date { get; set; } = "";

    /// <summary>The month, "Jan" to "Dec" (categorical).</summary>
    [LoadColumn(1)] public string Month { get; set; } = "";

    /// <summary>Highest temperature of the day, °C.</summary>
    [LoadColumn(2)] public float TempMax { get; set; }

    /// <summary>Lowest temperature of the day, °C.</summary>
    [LoadColumn(3)] public float TempMin { get; set; }

    /// <summary>Mean wind speed, m/s.</summary>
    [LoadColumn(4)] public float Wind { get; set; }

    /// <summary>The label: some rain or snow fell that day.</summary>
    [LoadColumn(5)] public bool Rain { get; set; }
}

/// <summary>What a binary classifier adds to a <see cref="WeatherInput"/>.</summary>
public sealed class WeatherOutput
{
    /// <summary>The predicted class.</summary>
    [ColumnName("PredictedLabel")] public bool PredictedLabel { get; set; }

    /// <summary>The raw score (the logit for a logistic model).</summary>
    public float Score { get; set; }

    /// <summary>The probability of <see langword="true"/>.</summary>
    public float Probability { get; set; }
}

/// <summary>One penguin (multiclass task: <see cref="Species"/>).</summary>
public sealed class PenguinInput
{
    /// <summary>The label: Adelie, Chinstrap or Gentoo.</summary>
    [LoadColumn(0)] public string Species { get; set; } = "";

    /// <summary>Biscoe, Dream or Torgersen (categorical).</summary>
    [LoadColumn(1)] public string Island { get; set; } = "";

    /// <summary>Beak (bill) length, mm.</summary>
    [LoadColumn(2)] public float BeakLength { get; set; }

    /// <summary>Beak (bill) depth, mm.</summary>
    [LoadColumn(3)] public float BeakDepth { get; set; }

    /// <summary>Flipper length, mm.</summary>
    [LoadColumn(4)] public float FlipperLength { get; set; }

    /// <summary>Body mass, g.</summary>
    [LoadColumn(5)] public float BodyMass { get; set; }

    /// <summary>MALE, FEMALE or "" when unknown (categorical).</summary>
    [LoadColumn(6)] public string Sex { get; set; } = "";
}

/// <summary>What a multiclass classifier (followed by MapKeyToValue) adds to a <see cref="PenguinInput"/>.</summary>
public sealed class PenguinOutput
{
    /// <summary>The predicted species.</summary>
    [ColumnName("PredictedLabel")] public string PredictedLabel { get; set; } = "";

    /// <summary>One probability per species, in the order of the label's key values.</summary>
    public float[] Score { get; set; } = [];
}

/// <summary>One car (regression task: <see cref="MilesPerGallon"/>).</summary>
public sealed class CarInput
{
    /// <summary>Make and model (not a feature).</summary>
    [LoadColumn(0)] public string Name { get; set; } = "";

    /// <summary>The label: fuel economy, miles per US gallon (missing for 8 cars).</summary>
    [LoadColumn(1)] public float MilesPerGallon { get; set; }

    /// <summary>Number of cylinders.</summary>
    [LoadColumn(2)] public float Cylinders { get; set; }

    /// <summary>Engine displacement, cubic inches.</summary>
    [LoadColumn(3)] public float Displacement { get; set; }

    /// <summary>Engine power, hp (missing for 6 cars).</summary>
    [LoadColumn(4)] public float Horsepower { get; set; }

    /// <summary>Weight, lbs.</summary>
    [LoadColumn(5)] public float Weight { get; set; }

    /// <summary>Time from 0 to 60 mph, s.</summary>
    [LoadColumn(6)] public float Acceleration { get; set; }

    /// <summary>Model year, 1970 to 1982.</summary>
    [LoadColumn(7)] public float Year { get; set; }

    /// <summary>USA, Europe or Japan (categorical).</summary>
    [LoadColumn(8)] public string Origin { get; set; } = "";
}

/// <summary>What a regression model adds to a <see cref="CarInput"/>.</summary>
public sealed class CarOutput
{
    /// <summary>The predicted miles per gallon.</summary>
    public float Score { get; set; }
}
